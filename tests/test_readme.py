"""The README's "Compress your own model" snippet runs as written."""

import os
import re
import runpy


def _snippet() -> str:
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = text[text.index("## Compress your own model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "snippet.py").write_text(_snippet())
    runpy.run_path(str(tmp_path / "snippet.py"), run_name="__main__")
    out = capsys.readouterr().out
    rows = {name: (float(ratio), float(dense), float(compressed)) for name, ratio, dense, compressed
            in re.findall(r"(\w+): ([\d.]+)x smaller, accuracy ([\d.]+) -> ([\d.]+)", out)}
    assert set(rows) == {"deep", "ttq", "bnn"}, out
    for name in ("deep", "ttq"):  # the defaults keep the user's accuracy
        ratio, dense, compressed = rows[name]
        assert dense > 0.75 and compressed >= dense - 0.02, (name, rows[name])
    assert rows["deep"][0] > 15 and rows["ttq"][0] > 8 and rows["bnn"][0] > 8, rows
    assert all((tmp_path / f"mynet_{name}.zyl").exists() for name in rows)
    assert "'accuracy': 0." in out  # the TTQ file, reloaded with the user's model
