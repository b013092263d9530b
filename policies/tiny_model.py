"""The tiny local model: a Qwen2-architecture causal LM folder built offline in about a second.

Tests and the CPU demo need a real model folder that loads and behaves like a hub model (same config
class, tokenizer class, chat template and special tokens) without a download. So the folder holds:

- a byte-level BPE tokenizer with Qwen2's normalizer, pre-tokenizer and decoder, trained on generated
  tool-use conversations, JSON and English words (the merges fit the text the model will see);
- Qwen2.5's special tokens at the end of the vocabulary, as in Qwen2.5: ``<|endoftext|>`` (pad),
  ``<|im_start|>``, ``<|im_end|>`` (eos); and ``<tool_call>``, ``</tool_call>``, ``<tool_response>``,
  ``</tool_response>`` as *normal* added tokens, so that ``decode(skip_special_tokens=True)`` (VeRL's
  way of decoding a rollout) keeps the tags the reward parses;
- Qwen2.5's exact chat template, or a compact variant with a terse tool block (``template="compact"``):
  DESIGN.md measured that a tiny model learns to copy arguments with ~60-token prompts but not with
  Qwen2.5's ~355-token tool block;
- random Qwen2 weights (seeded) in safetensors, and a generation config that stops on either eos;
- optionally (``spec.pretrain_steps``) a copy pre-training of those weights (``policies.tiny_pretrain``,
  ~0.18 s a step on 2 cores): without it the model cannot copy an unseen name into a call.

Same spec, same bytes: the corpus comes from a fixed seed and BPE training is deterministic, so a
rebuild is byte-identical and can be cached by digest (a pre-trained one on the same torch version and
thread count, since float sums depend on both). The tokenizer and corpus do not depend on
``spec.seed`` or ``spec.template``: models built with other seeds or templates share one tokenizer.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from envs.atomic import swap_in_folder

TemplateName = Literal["qwen2.5", "compact"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATE_FILES: dict[str, str] = {"qwen2.5": "qwen2_5.jinja", "compact": "qwen2_5_compact.jinja"}

PAD_TOKEN, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# Written into every build; its presence is what allows a rebuild to replace the folder.
MARKER_FILE = "ftrl_tiny_model.json"
BUILDER = "ftrl-pipeline tiny model"

CORPUS_SEED = 20250101
CORPUS_CONVERSATIONS = 1000
CORPUS_SENTENCES = 2000
PRETRAINING_CONVERSATIONS = 2000

_VERBS = (
    "get search find list book cancel update create check compute convert lookup send calculate fetch "
    "count add remove delete set reserve query verify transfer track translate schedule estimate rate"
).split()

# Common English words plus the vocabulary of tool-use tasks (travel, retail, weather, finance, facts).
_WORDS = """
a about above across act action add address after again against age agent ago air airline airport all
allow almost alone along already also always amount an and animal answer any anyone anything apple
appointment april area arm around arrival arrive art article as ask at august author available average
away baby back bad bag baggage balance bank base be beach because become bed been before begin behind
being believe below best better between big bill bird birth black blue board boat body book born both
box boy branch bread break bring brother brown build building business busy but buy by cabin call came
camera can capital car card care carry case cat category center century certificate chair change charge
check child choose church cities city class clean clear close clothes cloud code cold college color
come company complete condition confirm contact continue cost could count country course create credit
cup currency current customer cut dark data date daughter day dead dear december decide deep degree
delivery department departure describe description design destination detail details did die
different dinner direct director discount distance do doctor document does dog dollar done door down
draw dream dress drink drive during each early earth east easy eat economy edge effect egg eight either
election else email employee end energy engine enough enter entire error euro even evening event ever
every exact example exchange expect experience explain eye face fact fall family far farm fast father
fee feel few field figure file fill film final find fine fire first fish five flight floor fly follow
food foot for forecast form found four free friday friend from front fruit full function game garden
gave general get gift girl give glass go gold good government great green ground group grow guest
had hair half hand happen happy hard has hat have he head health hear heart heat heavy height held
hello help her here high him his history hold holiday home hope horse hospital hot hotel hour house
how human hundred husband i idea if important in include income increase information inside insurance
into is island issue it item its january job join july june just keep key kind king kitchen know lake
land language large last late later law lead learn least leave left leg less letter level library
life light like limit line list listen little live local location long look lose lot love low machine
made main make man manager many map march mark market match matter may me mean measure meet meeting
member message method middle might mile million mind minute miss model moment monday money month more
morning most mother mountain move movie much museum music must my name nation near need network never
new news next night nine no none north not note nothing november now number object ocean october of
off offer office often oil old on once one only open option or orange order origin other our out
over own page paid pain paper parent park part party pass passenger password past pay payment people
per percent person phone pick picture piece place plan plane play please point policy poor popular
population port position possible pound power present president price print private problem product
profile program project provide public pull purchase put quality quarter question quick quite radio
rain range rate rather reach read ready real reason receive record red refund region remember rent
repeat reply report request require reservation reserve rest result return review rich ride right
river road rock room round route rule run safe said sale same saturday save say school science score
sea search season seat second see seem sell send sentence september service set seven shape share she
ship shop short should show side sign simple since sing single sister sit six size sky sleep slow
small snow so soft some someone something son song soon sort sound south space speak special speed
spend sport spring square staff stand star start state station status stay step still stock stop
store story street strong student study subject such summer sun sunday supply sure system table take
talk tax teacher team temperature ten term test than thank that the their them then there these they
thing think third this those though thought thousand three through thursday ticket time title to
today together told tomorrow too took top total toward town track train transfer travel tree trip
true try tuesday turn two type under understand unit until up update upon us use user usual valid
value very village visit voice wait walk wall want war warm was watch water way we weather wednesday
week weight well went were west what when where which while white who whole why wide wife will wind
window winter wish with within without woman word work world would write year yes yesterday yet you
young your zero zip
""".split()

_JSON_TYPES = ("string", "integer", "number", "boolean", "array")


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model. The defaults give ~1.2M parameters: DESIGN.md found that training steps
    matter far more than size on a CPU, so the default is small enough for ~0.5 s SFT steps.

    ``vocab_size`` is the embedding size; the tokenizer fills it with BPE merges up to the 7 added
    tokens at its end (fewer merges only if the generated corpus runs out of pairs).
    ``template`` picks the chat template: ``"qwen2.5"`` (exact) or ``"compact"`` (terse tool block).
    ``pretrain_steps`` > 0 gives the random weights a copy pre-training (``policies.tiny_pretrain``):
    without it the model cannot copy unseen names into tool calls, which held-out tasks need.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    vocab_size: int = 2048
    max_position_embeddings: int = 4096
    seed: int = 0
    template: TemplateName = "qwen2.5"
    pretrain_steps: int = 0

    def __post_init__(self) -> None:
        sizes = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")
        for name in (*sizes, "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TinyModelSpec.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TinyModelSpec.hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"TinyModelSpec.num_heads ({self.num_heads}) must be divisible by num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if not isinstance(self.pretrain_steps, int) or self.pretrain_steps < 0:
            raise ValueError(
                f"TinyModelSpec.pretrain_steps must be a non-negative integer, got {self.pretrain_steps!r}"
            )
        minimum_vocab = 256 + len(SPECIAL_TOKENS) + len(TOOL_TOKENS)
        if not isinstance(self.vocab_size, int) or self.vocab_size < minimum_vocab:
            raise ValueError(
                f"TinyModelSpec.vocab_size must be an integer >= {minimum_vocab} (256 byte tokens and "
                f"{minimum_vocab - 256} added tokens), got {self.vocab_size!r}"
            )
        if self.template not in TEMPLATE_FILES:
            raise ValueError(
                f"TinyModelSpec.template must be one of {sorted(TEMPLATE_FILES)}, got {self.template!r}"
            )


def chat_template(name: TemplateName) -> str:
    """The text of a packaged chat template (``"qwen2.5"`` or ``"compact"``)."""
    return (TEMPLATES_DIR / TEMPLATE_FILES[name]).read_text(encoding="utf-8")


def build_tiny_model(
    out_dir: str | Path,
    spec: TinyModelSpec = TinyModelSpec(),
    log: Callable[[str], None] | None = None,
) -> Path:
    """Build the model folder at ``out_dir`` and return its path; ``log`` hears the pre-training's progress.

    The folder is assembled under a temporary name beside ``out_dir`` and renamed into place when
    complete, so an interrupted build never leaves a folder that looks finished. An existing
    ``out_dir`` is replaced only if it is empty or an earlier tiny build (it holds ``MARKER_FILE``);
    anything else raises ``FileExistsError`` before any work is done.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".building", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)
        tokenizer = _build_tokenizer(spec)
        tokenizer.save_pretrained(staging)
        model = _build_model(spec, tokenizer)
        marker: dict[str, Any] = {"builder": BUILDER, "spec": asdict(spec)}
        if spec.pretrain_steps:
            marker["copy_accuracy"] = _pretrain(model, tokenizer, spec, log)
        _save_quietly(model, staging)
        (staging / MARKER_FILE).write_text(
            json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def built_spec(folder: str | Path) -> TinyModelSpec | None:
    """The spec a tiny build in ``folder`` was made from; None when ``folder`` holds no complete build
    or one from a spec this version no longer reads (so callers rebuild rather than trust it)."""
    try:
        marker = json.loads((Path(folder) / MARKER_FILE).read_text(encoding="utf-8"))
        return TinyModelSpec(**marker["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise FileExistsError(f"{out_dir} exists and is not a directory; choose another output folder")
    if any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        raise FileExistsError(
            f"{out_dir} is not empty and is not a tiny model build (it has no {MARKER_FILE}); "
            "refusing to overwrite it: choose a new or empty output folder"
        )


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Swap the finished folder in, after checking the target again (it may have changed meanwhile)."""
    _check_replaceable(out_dir)  # it may have changed while we were building
    swap_in_folder(staging, out_dir)


def _build_tokenizer(spec: TinyModelSpec) -> Any:
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    model = json.loads(_train_bpe(spec.vocab_size - len(SPECIAL_TOKENS) - len(TOOL_TOKENS)))["model"]
    # Added tokens follow the merges, in Qwen2.5's order; putting them in the vocab pins their ids.
    vocab = dict(model["vocab"])
    for token in (*SPECIAL_TOKENS, *TOOL_TOKENS):
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(pair) for pair in model["merges"]],
        unk_token=None,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[IM_START, IM_END],
        errors="replace",
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in TOOL_TOKENS])
    tokenizer.chat_template = chat_template(spec.template)
    return tokenizer


@cache
def _train_bpe(merge_vocab_size: int) -> str:
    """Train the byte-level BPE and return its tokenizer.json text (cached: builds share it)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=merge_vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    return tokenizer.to_str()


def _build_model(spec: TinyModelSpec, tokenizer: Any) -> Any:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    eos_id, pad_id = tokenizer.convert_tokens_to_ids([IM_END, PAD_TOKEN])
    config = Qwen2Config(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, pad_id], pad_token_id=pad_id)
    return model


def _pretrain(model: Any, tokenizer: Any, spec: TinyModelSpec, log: Callable[[str], None] | None) -> float:
    """Copy pre-training (``policies.tiny_pretrain``) on text in the model's own template; returns the
    share of unseen random spans the model then repeats exactly (kept in the build marker)."""
    from policies.tiny_pretrain import copy_accuracy, pretrain_copying

    text_ids = [i for text in _pretraining_text(spec.template) for i in tokenizer(text)["input_ids"]]
    span_ids = range(256, tokenizer.convert_tokens_to_ids(PAD_TOKEN))  # BPE tokens, no added ones

    def report(step: int, loss: float) -> None:
        if log is not None:
            log(f"tiny model pre-training: step {step}/{spec.pretrain_steps}, loss {loss:.3f}")

    pretrain_copying(model, text_ids, span_ids, steps=spec.pretrain_steps, seed=spec.seed, log=report)
    accuracy = copy_accuracy(model, span_ids)
    if log is not None:
        log(f"tiny model pre-training: repeats {accuracy:.0%} of unseen random spans exactly")
    return accuracy


def _save_quietly(model: Any, folder: Path) -> None:
    """save_pretrained without its progress bar, which is noise for a 5 MB file written in 10 ms."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# --- the generated training text ------------------------------------------------------------------

_ADDED_TOKENS_RE = re.compile("|".join(re.escape(t) for t in (*SPECIAL_TOKENS, *TOOL_TOKENS)))


def _corpus() -> Iterator[str]:
    """Chat-formatted tool-use conversations in both templates, then plain sentences and JSON.

    Text is cut at the added tokens: they never reach BPE, so no merges are spent on their pieces.
    """
    rng = random.Random(CORPUS_SEED)
    templates = [_compile(chat_template(name)) for name in sorted(TEMPLATE_FILES)]
    for i in range(CORPUS_CONVERSATIONS):
        messages, tools = _conversation(rng)
        text = templates[i % len(templates)].render(messages=messages, tools=tools or None)
        yield from (piece for piece in _ADDED_TOKENS_RE.split(text) if piece)
    for _ in range(CORPUS_SENTENCES):
        yield _sentence(rng)
        yield _json_record(rng)


def _pretraining_text(template: TemplateName) -> Iterator[str]:
    """The text the copy pre-training cuts its rows from: conversations in the model's own template
    (added tokens intact, unlike ``_corpus``), sentences and JSON, from a seed of their own."""
    rng = random.Random(CORPUS_SEED + 1)
    compiled = _compile(chat_template(template))
    for _ in range(PRETRAINING_CONVERSATIONS):
        messages, tools = _conversation(rng)
        yield compiled.render(messages=messages, tools=tools or None)
        yield _sentence(rng) + "\n" + _json_record(rng) + "\n"


def _compile(template_text: str) -> Any:
    """Compile a chat template the way transformers does (trim/lstrip blocks, unescaped ``tojson``)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )
    return env.from_string(template_text)


def _conversation(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tools = [_tool(rng) for _ in range(rng.choice((0, 1, 2, 3, 4)))]
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.4:
        messages.append({"role": "system", "content": _sentence(rng)})
    messages.append({"role": "user", "content": _sentence(rng, end="?")})
    for _ in range(rng.randint(1, 3) if tools else 0):
        calls = [_call(rng, tool) for tool in rng.sample(tools, rng.randint(1, len(tools)))]
        messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        messages.extend({"role": "tool", "content": _json_record(rng)} for _ in calls)
    messages.append({"role": "assistant", "content": _sentence(rng)})
    return messages, tools


def _tool(rng: random.Random) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name in (_snake(rng) for _ in range(rng.randint(1, 4))):
        kind = rng.choice(_JSON_TYPES)
        schema: dict[str, Any] = {"type": kind, "description": _sentence(rng)}
        if kind == "string" and rng.random() < 0.3:
            schema["enum"] = rng.sample(_WORDS, rng.randint(2, 4))
        if kind == "array":
            schema["items"] = {"type": "string"}
        properties[name] = schema
    required = [name for name in properties if rng.random() < 0.7]
    function = {
        "name": f"{rng.choice(_VERBS)}_{_snake(rng)}",
        "description": _sentence(rng),
        "parameters": {"type": "object", "properties": properties, "required": required},
    }
    return {"type": "function", "function": function}


def _call(rng: random.Random, tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    arguments = {
        name: rng.choice(schema["enum"]) if "enum" in schema else _value(rng, schema["type"])
        for name, schema in function["parameters"]["properties"].items()
    }
    return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}


def _value(rng: random.Random, kind: str) -> Any:
    if kind == "integer":
        return rng.randint(0, 10 ** rng.randint(1, 6))
    if kind == "number":
        return round(rng.uniform(0, 1000), rng.randint(1, 3))
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return rng.sample(_WORDS, rng.randint(1, 3))
    shape = rng.random()
    if shape < 0.2:
        return f"{rng.randint(2020, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if shape < 0.35:
        letters = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(2, 3)))
        return f"{letters}{rng.randint(0, 9999)}"
    if shape < 0.6:
        return " ".join(rng.choice(_WORDS).capitalize() for _ in range(rng.randint(1, 2)))
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))


def _json_record(rng: random.Random) -> str:
    return json.dumps({_snake(rng): _value(rng, rng.choice(_JSON_TYPES)) for _ in range(rng.randint(1, 4))})


def _snake(rng: random.Random) -> str:
    return "_".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 2)))


def _sentence(rng: random.Random, end: str = ".") -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 5000)))
    if rng.random() < 0.2:
        words[rng.randrange(len(words))] += ","
    return " ".join(words).capitalize() + end
