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
    ratio = float(re.search(r"([\d.]+)x smaller", out).group(1))
    accuracy = float(re.search(r"-> ([\d.]+) \(measured on the file\)", out).group(1))
    assert ratio > 8 and accuracy > 0.7, out
    assert (tmp_path / "mynet.zyl").exists() and (tmp_path / "mynet_ttq.zyl").exists()
    assert "TTQ file:" in out
