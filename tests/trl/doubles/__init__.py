"""CPU doubles of vLLM (an HTTP server and an in-process `LLM`) that let TRL's real vLLM code paths run in tests.

- `sampler`: the HF-transformers generation engine both doubles share (vLLM's sampling order and logprob modes).
- `vllm_server`: the `vllm serve` double (its own process) and the installer for TRL's client-side transport.
- `weight_transport`: the socket stand-in for vLLM's NCCL weight-transfer engine, both ends.
- `vllm_colocate`: the `vllm.LLM` / `SamplingParams` doubles and their installer.
- `ddp_vllm_worker`: a two-process (gloo) GRPOTrainer run against the server double, for torchrun.

Nothing here is imported by `prefix_rft`; modules import only what they use so that the server process stays light.
"""
