"""The same answers on a CUDA GPU as on the CPU: every checkpoint type, the experts' kernels, the engine with media,
`hepta train`, `hepta generate` and `hepta serve` with --device cuda.

Skipped where torch sees no GPU (tests/test_devices.py covers the selection logic there). fp32 on both sides with
TF32 off, so the GPU's results are held to the CPU's within float rounding.
"""

import sys
from pathlib import Path

import pytest
import torch

import hepta

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: run on a machine with one")

sys.path.insert(0, str(Path(__file__).parent.parent / "interop"))  # the checkpoint cases of the CPU tests

from helpers import micro_set_flags, random_ids, run_cli  # noqa: E402

GPU = torch.device("cuda")


@pytest.fixture(autouse=True)
def _no_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield


def _cases():
    from test_hf_load import CASES
    return list(CASES)


@pytest.mark.parametrize("case", _cases())
def test_every_checkpoint_type_gives_the_cpus_logits_and_greedy_tokens_on_the_gpu(case, tmp_path):
    """Held to hepta on the CPU, which tests/interop holds to transformers (the GPU machine's transformers may be
    another release, whose reference answers can differ)."""
    from tokenizers import Tokenizer, models
    from test_hf_load import save_hf
    from transformers import PreTrainedTokenizerFast

    from hepta.infer.engine import Engine, EngineConfig, generate_many
    from hepta.infer.request import Request
    from hepta.infer.sampling import SamplingParams
    from hepta.loading import load_tokenizer

    save_hf(case, tmp_path)
    cpu, gpu = hepta.load(tmp_path), hepta.load(tmp_path, device=GPU)
    ids = random_ids(160, 2, 33, seed=3)
    with torch.no_grad():
        assert (gpu(ids.to(GPU)).cpu() - cpu(ids)).abs().max() <= 1e-4
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(160)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w159").save_pretrained(tmp_path)
    prompts = [random_ids(160, 1, length, seed=length)[0].tolist() for length in (5, 9, 1, 17, 3, 12, 6, 24)]
    answers = []
    for model in (cpu, gpu):  # batched, with the long prompts chunked between decode steps
        engine = Engine(model, load_tokenizer(tmp_path), EngineConfig(max_num_seqs=8, prefill_chunk=8)).start()
        try:
            got = generate_many(engine, [Request(p, 16, SamplingParams(temperature=0.0), logit_bias={159: -100.0})
                                         for p in prompts])
        finally:
            engine.stop()
        answers.append([choices[0].token_ids for choices in got])
    assert answers[1] == answers[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_experts_grouped_gemm_on_the_gpu_equals_the_cpu_kernel_forward_and_backward(dtype):
    from hepta.model.experts import GroupedExperts

    torch.manual_seed(0)
    cpu = GroupedExperts(8, 64, 48, implementation="fused")
    cpu.reset_parameters(std=0.1)
    gpu = GroupedExperts(8, 64, 48)  # auto: grouped GEMM on CUDA
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(GPU, dtype)
    cpu.to(dtype)
    x = torch.randn(40, 64, dtype=dtype)
    counts = [5, 0, 12, 3, 9, 1, 0, 10]  # empty experts too
    token = torch.randint(0, 40, (sum(counts),))
    weight = torch.rand(sum(counts), dtype=dtype)
    outs, grads = [], []
    for module, device in ((cpu, "cpu"), (gpu, GPU)):
        x_d = x.to(device, copy=True).requires_grad_()
        y = module(x_d, weight.to(device), token.to(device), counts)
        y.float().square().sum().backward()
        outs.append(y.float().cpu())
        grads.append([x_d.grad.float().cpu(), module.gate_up_proj.grad.float().cpu(), module.down_proj.grad.float().cpu()])
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    assert (outs[0] - outs[1]).abs().max() <= tolerance * outs[0].abs().max()
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= tolerance * a.abs().max()


def test_an_image_and_a_video_prompt_decode_on_the_gpu_as_transformers_on_the_cpu(tmp_path_factory):
    import test_hf_qwen3_vl as vl
    from tokenizers import Tokenizer, models as vocabularies
    from transformers import PreTrainedTokenizerFast, Qwen3VLMoeForConditionalGeneration

    from hepta.infer.engine import Engine, EngineConfig, generate_many
    from hepta.infer.request import Request
    from hepta.infer.sampling import SamplingParams
    from hepta.loading import load_tokenizer, load_vision

    folder = vl.folder.__wrapped__(tmp_path_factory)
    hf = Qwen3VLMoeForConditionalGeneration.from_pretrained(folder).eval()
    words = Tokenizer(vocabularies.WordLevel({f"w{i}": i for i in range(200)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w199").save_pretrained(folder)
    vision = load_vision(folder, device=GPU)
    pre = vision.preprocessor
    requests = []
    for case, seed in (("one image", 5), ("a timestamped video", 7)):
        items = vl.MEDIA[case](pre)
        requests.append((vl.prompt(pre, items, seed), items))
    banned = [199, *range(180, 200)]
    expected = []
    for ids, items in requests:
        with torch.no_grad():
            out = hf.generate(**vl.transformers_inputs(ids, items), max_new_tokens=12, do_sample=False,
                              suppress_tokens=banned)
        expected.append(out[0, len(ids):].tolist())
    engine = Engine(hepta.load(folder, device=GPU), load_tokenizer(folder), EngineConfig(max_num_seqs=2),
                    vision=vision).start()
    try:
        got = generate_many(engine, [Request(ids, 12, SamplingParams(temperature=0.0), media=items,
                                             logit_bias={t: -100.0 for t in banned}) for ids, items in requests])
    finally:
        engine.stop()
    assert [choices[0].token_ids for choices in got] == expected


@pytest.fixture(scope="module")
def trained_on_gpu(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("gpu") / "run"
    proc = run_cli("train", "--out", str(out), "--data", str(corpus), *micro_set_flags(), "--steps", "6",
                   "--batch-size", "4", "--seq-len", "64", "--save-every", "3", "--eval-every", "3", "--quiet",
                   "--device", "cuda", "--bf16")
    assert proc.returncode == 0, proc.stderr
    assert "validation loss" in proc.stdout
    return out


def test_train_on_the_gpu_then_resume_on_it_and_generate_on_either(trained_on_gpu, corpus):
    proc = run_cli("train", "--out", str(trained_on_gpu), "--resume", "--steps", "8", "--quiet", "--device", "cuda")
    assert proc.returncode == 0, proc.stderr
    answers = []
    for device in ("cuda", "cpu"):
        proc = run_cli("generate", "--model", str(trained_on_gpu), "--prompt", "import ", "--max-tokens", "12",
                       "--temperature", "0", "--device", device)
        assert proc.returncode == 0, proc.stderr
        answers.append(proc.stdout)
    assert answers[0] == answers[1] and len(answers[0]) > len("import \n")


def test_hepta_serve_on_the_gpu_answers_as_the_cpu_engine(trained_on_gpu):
    import subprocess

    import httpx

    from hepta.serve.runner import free_port, wait_healthy

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "hepta", "serve", "--model", str(trained_on_gpu), "--port",
                               str(port), "--device", "cuda"], stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=180, process=server)
        body = {"model": "run", "prompt": "def ", "max_tokens": 12, "temperature": 0}
        served = [httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={**body, "prompt": p}, timeout=60)
                  for p in ("def ", "import ", "class ")]
    finally:
        server.terminate()
        _, log = server.communicate(timeout=60)
    assert "on cuda:0" in log
    for prompt, response in zip(("def ", "import ", "class "), served):
        assert response.status_code == 200, response.text
        proc = run_cli("generate", "--model", str(trained_on_gpu), "--prompt", prompt, "--max-tokens", "12",
                       "--temperature", "0", "--device", "cpu")
        assert proc.stdout == prompt + response.json()["choices"][0]["text"] + "\n"
