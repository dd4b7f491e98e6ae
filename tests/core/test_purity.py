import subprocess
import sys


def test_core_imports_only_torch_numpy_and_stdlib():
    code = (
        "import sys; import prefix_rft.core; "
        "bad = [m for m in ('trl', 'transformers', 'accelerate', 'datasets', 'vllm') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
