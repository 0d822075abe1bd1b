"""experiments.class_iou: per-label IoU, recall and commonest mistakes of a confusion matrix."""

import pathlib
import sys

import numpy as np

from experiments import class_iou


def test_rows_give_iou_recall_and_the_commonest_mistakes():
    # rows: true label, columns: predicted
    confusion = np.array([[90, 6, 4],
                          [10, 30, 0],
                          [2, 8, 10]])
    lines = class_iou.table(confusion, ["background", "cat", "dog"]).splitlines()
    # cat: IoU 30 / (40 + 44 - 30) = 0.556; recall 75%; mistaken for background 25%, dog 0%
    assert lines[3] == "| cat | 0.556 | 75.0% | background 25.0%, dog 0.0% |"
    # dog: IoU 10 / (20 + 14 - 10) = 0.417; recall 50%; cat 40% before background 10%
    assert lines[4] == "| dog | 0.417 | 50.0% | cat 40.0%, background 10.0% |"
    background = 90 / (100 + 102 - 90)
    assert lines[-1] == f"| **mean** | **{(background + 30 / 54 + 10 / 24) / 3:.3f}** | | |"


def test_label_names_start_with_the_background_then_the_scene_classes():
    names = class_iou.label_names(12)
    assert names[:3] == ["background", "T-shirt/top", "Trouser"] and names[11] == "11"


def test_the_table_of_a_kept_model_scores_train_scenes_when_asked(monkeypatch, capsys):
    model = pathlib.Path(__file__).resolve().parents[1] / "experiments/models/deeplab_ct7.zyl"
    monkeypatch.setattr(sys, "argv", ["class_iou", str(model), "--max-examples", "100",
                                      "--split", "train"])
    class_iou.main()
    out = capsys.readouterr().out
    assert "first 100 train scenes" in out
    mean = float(out.strip().splitlines()[-1].split("**")[3])
    assert mean > 0.5  # every pixel called background would score about 1/11
