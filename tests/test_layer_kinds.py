"""experiments.layer_kinds sums a report's rows per kind of layer."""

from experiments import layer_kinds


def _row(name, method, dense, coded, kept, bits=32):
    return {"name": name, "method": method, "dense_bytes": dense, "coded_bytes": coded,
            "weights": dense // 4, "kept": kept, "weight_bits": bits}


def test_rows_are_summed_per_kind_and_the_framing_is_the_rest():
    report = {"file_bytes": 1000, "ratio": 4.4, "layers": [
        _row("params/a/kernel", "shared", 2000, 300, 100),
        _row("params/b/depthwise/kernel", "shared", 800, 200, 200),
        _row("params/c/kernel", "shared", 1200, 100, 60),
        _row("batch_stats/bn/mean", "cast", 400, 200, 100, bits=16)]}
    lines = layer_kinds.table(report).splitlines()
    assert lines[2] == "| shared, other kernels | 2 | 800 | 20% | 3,200 | 400 | 8.0x |"
    assert lines[3] == "| shared, depthwise | 1 | 200 | 100% | 800 | 200 | 4.0x |"
    assert lines[4] == "| cast, 16-bit | 1 | 100 | 100% | 400 | 200 | 2.0x |"
    assert lines[5].startswith("| `params/a/kernel` | 1 | 500 |")
    assert lines[-1] == "leaves 800 B + header and framing 200 B = file 1,000 B (4.40x)"


def test_a_kind_stored_in_the_header_alone_has_no_ratio():
    report = {"file_bytes": 500, "ratio": 2.0, "layers": [
        _row("params/a/kernel", "shared", 800, 200, 100),
        _row("batch_stats/bn/var", "constant", 400, 0, 100, bits=0)]}
    assert "| constant, 0-bit | 1 | 100 | 100% | 400 | 0 | header only |" in \
        layer_kinds.table(report).splitlines()
