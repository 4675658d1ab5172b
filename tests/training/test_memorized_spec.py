"""specs/memorized.yaml asks the over-trained model for exactly the captions it was trained on.

Training the model itself takes minutes on a CPU, so what it generates is measured by
`benchmarks/bench_memorized.py` (RESULTS.md §13), not here; this keeps the two specs in step.
"""

from __future__ import annotations

from pathlib import Path

from synthdata.plan.load import load_spec
from synthdata.training.data import collect_items
from synthdata.training.spec import load_train_spec

REPO = Path(__file__).resolve().parents[2]


def test_memorized_spec_prompts_are_the_training_captions_of_its_model():
    train = load_train_spec(REPO / "specs" / "train-memorized.yaml")
    captions = [item.caption for item in collect_items(train.data)]
    assert len(captions) == 8 == len(set(captions))
    spec = load_spec(REPO / "specs" / "memorized.yaml", check_files=False)  # the model may not be built yet
    recalled = [p for name, label in spec.labels.items() if name != "novel" for p in label.prompts]
    assert sorted(recalled) == sorted(captions)
    assert not set(spec.labels["novel"].prompts) & set(captions)
    assert Path(spec.generator.model) == (REPO / train.output.dir / "model").resolve()
    assert spec.memorization.reference == ["from-training"]
