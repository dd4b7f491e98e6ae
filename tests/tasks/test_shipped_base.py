"""The default base model ships with the package: its weights match their recorded hash, it is the default config's,
and loading it never pretrains."""

import dataclasses
import hashlib
import json
import shutil

import pytest

from prefix_rft.tasks import BaseModelConfig, load_or_pretrain_base
from prefix_rft.tasks import pretrain as pretrain_module
from prefix_rft.tasks.pretrain import CORPUS_VERSION, SHIPPED_DIR, SHIPPED_INFO

INFO = json.loads((SHIPPED_DIR / SHIPPED_INFO).read_text())


def test_shipped_weights_match_their_recorded_sha256():
    digest = hashlib.sha256((SHIPPED_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert digest == INFO["sha256"]


def test_shipped_base_is_the_default_config_so_the_rebuild_command_pretrains_the_same():
    # `python -m prefix_rft.tasks.pretrain --force` pretrains BaseModelConfig(): the shipped one's config and name
    assert INFO["config"] == json.loads(json.dumps(dataclasses.asdict(BaseModelConfig())))
    assert (INFO["hash"], INFO["version"]) == ("2a6d2666ec22", CORPUS_VERSION)


def test_loading_the_default_base_never_pretrains(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrain_module, "pretrain", lambda *a, **k: pytest.fail("pretrained the shipped base"))
    assert load_or_pretrain_base(cache_dir=str(tmp_path)) == str(SHIPPED_DIR)


def test_a_damaged_shipped_copy_is_refused_by_name(monkeypatch, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(SHIPPED_DIR, copy)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(weights))
    monkeypatch.setattr(pretrain_module, "SHIPPED_DIR", copy)
    with pytest.raises(RuntimeError, match="is damaged .* --rebuild-base"):
        load_or_pretrain_base(cache_dir=str(tmp_path / "cache"))


def test_rebuild_ignores_the_shipped_base(monkeypatch, tmp_path):
    seen = []

    def fake_pretrain(config, progress=True):
        seen.append(config)
        raise KeyboardInterrupt  # stop before anything is saved

    monkeypatch.setattr(pretrain_module, "pretrain", fake_pretrain)
    with pytest.raises(KeyboardInterrupt):
        load_or_pretrain_base(cache_dir=str(tmp_path), rebuild=True)
    assert seen == [BaseModelConfig()]
