"""Tiny random checkpoints written with ``save_pretrained``, a tokenizer with a chat template, the
video processor's config, a two-second test video (PyAV), and JSONL records — what a user of
``autoprune search --model DIR --data FILE.jsonl`` has, at a size the CPU runs in seconds.

The video processor's config is written as JSON because transformers' processor classes need
torchvision, which this machine cannot import; its keys are those
``NemotronH_Omni_Reasoning_V3VideoProcessor.save_pretrained`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<img>", "</img>", "<video>"]
WORDS = ("Frame frame sampled at seconds and Answer with the option's letter user assistant what colour is "
         "square moving left right up down red green blue how many count where count none").split()
TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }} : {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant :{% endif %}")
VOCAB = 160


def write_tokenizer(folder: Path):
    """A word-level tokenizer (letters, digits one by one, the words of the prompts) with the
    omni placeholders as special tokens and a chat template; saved with ``save_pretrained``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {}
    for t in SPECIAL + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:,'?\n") + WORDS:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=SPECIAL[4:])
    fast.chat_template = TEMPLATE
    assert len(fast) <= VOCAB
    fast.save_pretrained(folder)
    return fast


def _nemotron_h_config(**kw):
    from transformers import NemotronHConfig

    base = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=6,
                layers_block_type=["full_attention", "linear_attention", "mlp", "full_attention", "linear_attention",
                                   "mlp"],
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, mamba_num_heads=4, mamba_head_dim=8,
                n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=16, intermediate_size=48,
                n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                moe_shared_expert_intermediate_size=16, n_group=1, topk_group=1, use_cache=True)
    base.update(kw)
    return NemotronHConfig(**base)


def _randomise(model, seed=1234):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("dt_bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 - 1.0)
            elif name.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=g) * 2.0 - 1.0)


def omni_checkpoint(folder: Path, *, evs_rate: float = 0.5, seed: int = 0) -> Path:
    """A ``NemotronH_Omni_Reasoning_V3`` (RADIO 2 layers, NemotronH 6 layers) with its tokenizer and
    video processor config: frames of 64×64 (64 8-pixel patches), 2-frame tubelets → 16
    tokens per tubelet."""
    from transformers.models.nemotron_h_omni.configuration_nemotron_h_omni import NemotronH_Omni_Reasoning_V3_Config
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import NemotronH_Omni_Reasoning_V3
    from transformers.models.radio.configuration_radio import RadioConfig

    folder.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer(folder)
    torch.manual_seed(seed)
    vision = RadioConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8, image_size=64,
                         max_img_size=128, num_cls_tokens=2, num_registers=1, video_temporal_patch_size=2,
                         norm_mean=[0.5, 0.5, 0.5], norm_std=[0.5, 0.5, 0.5])
    cfg = NemotronH_Omni_Reasoning_V3_Config(
        vision_config=vision.to_dict(), text_config=_nemotron_h_config().to_dict(), projector_hidden_size=64,
        vision_hidden_size=32, video_pruning_rate=evs_rate, image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"))
    model = NemotronH_Omni_Reasoning_V3(cfg).eval()
    _randomise(model)
    model.save_pretrained(folder)
    (folder / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "NemotronH_Omni_Reasoning_V3VideoProcessor",
        "processor_class": "NemotronH_Omni_Reasoning_V3Processor",
        "norm_mean": [0.48145466, 0.4578275, 0.40821073], "norm_std": [0.26862954, 0.26130258, 0.27577711],
        "patch_size": 8, "downsample_ratio": 0.5, "video_target_num_patches": 64,
        "video_maintain_aspect_ratio": True, "temporal_patch_size": 2, "do_sample_frames": False,
    }, indent=2))
    return folder


def lm_checkpoint(folder: Path, family: str, *, seed: int = 0) -> Path:
    """A NemotronH or Bamba causal LM with its tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(folder)
    torch.manual_seed(seed)
    if family == "nemotron_h":
        from transformers import NemotronHForCausalLM

        model = NemotronHForCausalLM(_nemotron_h_config())
    else:
        from transformers import BambaConfig, BambaForCausalLM

        model = BambaForCausalLM(BambaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
            attn_layer_indices=[0, 3], mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=8,
            mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16, intermediate_size=48,
            max_position_embeddings=1024))
    _randomise(model.eval())
    model.save_pretrained(folder)
    return folder


def linear_lm_checkpoint(folder: Path, family: str, *, seed: int = 0) -> Path:
    """A Qwen3.5 language model (``qwen3_5_text``), Qwen3-Next or LFM2 causal LM with its tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(folder)
    torch.manual_seed(seed)
    types = ["linear_attention", "full_attention", "linear_attention", "full_attention", "linear_attention"]
    gdn = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=5, layer_types=types,
               num_attention_heads=4, num_key_value_heads=2, head_dim=8, linear_conv_kernel_dim=4,
               linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
               max_position_embeddings=1024)
    if family == "qwen3_5_text":
        from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

        model = Qwen3_5ForCausalLM(Qwen3_5TextConfig(**gdn))
    elif family == "qwen3_next":
        from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

        model = Qwen3NextForCausalLM(Qwen3NextConfig(**gdn, num_experts=4, num_experts_per_tok=2,
                                                     moe_intermediate_size=16, shared_expert_intermediate_size=16))
    else:
        from transformers import Lfm2Config, Lfm2ForCausalLM

        model = Lfm2ForCausalLM(Lfm2Config(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=5, num_attention_heads=4,
            num_key_value_heads=2, conv_L_cache=3, layer_types=["conv", "full_attention", "conv", "full_attention",
                                                                 "conv"],
            block_auto_adjust_ff_dim=False, max_position_embeddings=1024))
    _randomise(model.eval())
    model.save_pretrained(folder)
    return folder


def write_video(path: Path, *, seconds: float = 2.0, fps: int = 8, size: int = 64, seed: int = 0) -> Path:
    """A ``seconds``-long MPEG-4 clip (PyAV): a coloured square moving over a noisy background."""
    import av

    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            img = background.copy()
            x = (i * 5) % (size - 16)
            img[20:36, x:x + 16] = (255 * (seed % 3 == 0), 255 * (seed % 3 == 1), 255 * (seed % 3 == 2))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


QUESTIONS = ["what colour is the square", "where is the square moving", "how many square"]
CHOICES = [["red", "green", "blue"], ["left", "right", "up", "down"], ["1", "2", "3"]]


def video_records(folder: Path, n: int = 3, *, labelled: bool = True, stem: str = "clip", jsonl: str = "tiny.jsonl",
                  first: int = 0) -> Path:
    """``jsonl`` with ``n`` two-second videos ``{stem}-{i}.mp4`` beside it (ids ``{stem}-{i}``, ``i`` from ``first``)."""
    rows = []
    for i in range(first, first + n):
        write_video(folder / f"{stem}-{i}.mp4", seed=i)
        row = {"id": f"{stem}-{i}", "video": f"{stem}-{i}.mp4", "question": QUESTIONS[i % 3],
               "choices": CHOICES[i % 3]}
        if labelled:
            row["answer"] = i % len(CHOICES[i % 3])
        rows.append(row)
    return _write(folder / jsonl, rows)


def embedding_records(folder: Path, hidden: int, n: int = 3, visual: int = 48, *, labelled: bool = True,
                      stem: str = "emb", jsonl: str = "tiny.jsonl", seed: int = 0) -> Path:
    """``jsonl`` with ``n`` ``.npy`` visual embeddings ``{stem}-{i}.npy`` of width ``hidden`` beside it
    (ids ``{stem}-{i}``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        np.save(folder / f"{stem}-{i}.npy", rng.standard_normal((visual // 8, 8, hidden)).astype(np.float32))
        row = {"id": f"{stem}-{i}", "embeddings": f"{stem}-{i}.npy", "question": QUESTIONS[i % 3],
               "choices": CHOICES[i % 3]}
        if labelled:
            row["answer"] = i % len(CHOICES[i % 3])
        rows.append(row)
    return _write(folder / jsonl, rows)


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
