"""systolic8 explore: the resource model's fit and held-out errors, the Pareto logic, the recommendation under
budgets, the Fmax estimate and a small end-to-end sweep (no place-and-route)."""

import json

import numpy as np
import pytest

from hw.fpga.resource_model import (HELD_OUT, TRAINING, bram_blocks, dsp_blocks, fit, load_model, model_path)
from sw.apps.explore import (MEASURED_FMAX, Budget, Point, apply_place_and_route, compile_model, dominates,
                             explore, finalists, fits_budget, fmax_estimate, main, pareto, pareto_2d, recommend)


# ---- The resource model ------------------------------------------------------------------------------------------

def test_committed_fit_is_reproduced_from_its_records():
    """Refitting the committed synthesis records gives the committed coefficients and held-out errors."""
    model = load_model("ecp5-85k")
    records = [{k: v for k, v in r.items() if k != "role"} for r in model.records]
    again = fit(records, "ecp5-85k")
    for kind in ("luts", "ffs"):
        assert np.allclose(again.coefficients[kind], model.coefficients[kind], rtol=1e-9, atol=1e-6)
    assert again.errors == model.errors
    roles = [r["role"] for r in model.records]
    assert roles.count("training") == len(TRAINING) and roles.count("held-out") == len(HELD_OUT)


def test_held_out_errors_are_measured_and_small():
    model = load_model("ecp5-85k")
    held = [r for r in model.records if r["role"] == "held-out"]
    for kind in ("luts", "ffs"):
        errs = [100 * (model.predict(r["parameters"])[kind] - r["resources"][kind]) / r["resources"][kind]
                for r in held]
        assert model.errors[kind]["held_out_max_abs_pct"] == round(max(abs(e) for e in errs), 2)
        # docs/explore.md states the fit as within 3.5% (LUTs) and 0.5% (flops) on held-out runs up to 16x16.
        assert max(abs(e) for e in errs) <= model.errors[kind]["stated_pct"] <= {"luts": 3.5, "ffs": 0.5}[kind], errs


def test_committed_fit_is_of_the_current_design():
    """The fit's runs are of the design as it is now: a change to hw/ that changes the synthesized Verilog makes
    this fail until `make resource-model` refits (explore also warns)."""
    from dataclasses import replace

    from hw.fpga.resource_model import stale
    model = load_model("ecp5-85k")
    assert stale(model) is None
    records = [dict(r, inputs_sha256="0" * 64) for r in model.records]
    message = stale(replace(model, records=records))
    assert "make resource-model" in message and "2x2" in message


def test_dsp_and_bram_are_counted_exactly_on_every_run():
    for r in load_model("ecp5-85k").records:
        assert bram_blocks(r["parameters"]) == r["resources"]["bram"], r["parameters"]
        assert dsp_blocks(r["parameters"]) == r["resources"]["dsp"], r["parameters"]


def test_missing_fit_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m hw.fpga.resource_model fit"):
        load_model("ecp5-85k", path=tmp_path / "none.json")
    assert model_path("ecp5-85k").is_file()


# ---- Pareto, budget, recommendation ------------------------------------------------------------------------------

def _row(label, fps, luts, dsp=10, bram=10, batch=8):
    return {"label": label, "fps": fps, "point": {"batch": batch},
            "resources": {"packed_luts": luts, "ffs": luts, "dsp": dsp, "bram": bram}}


ROWS = [_row("a", 100, 1000), _row("b", 200, 2000), _row("c", 150, 2500),       # c: slower and dearer than b
        _row("d", 400, 5000, dsp=40), _row("e", 390, 3000, dsp=50),               # neither dominates the other
        _row("f", 400, 5000, dsp=40, bram=12)]                                    # f: d with more BRAM


def test_pareto_drops_exactly_the_dominated_points():
    front = pareto(ROWS)
    assert [r["label"] for r in front] == ["d", "e", "b", "a"]
    for r in ROWS:       # brute force: a row is on the front iff nothing dominates it
        assert (r in front) == (not any(dominates(o, r) for o in ROWS if o is not r))
    assert [r["label"] for r in pareto_2d(ROWS)] == ["a", "b", "e", "d"]


def test_budget_and_recommendation():
    budget = Budget(max_luts=4000, max_dsp=100, max_bram=100)
    assert fits_budget(ROWS[3], budget) == ["LUTs 5,000 > 4,000"]
    best, why = recommend(ROWS, budget, tolerance=0.05)
    assert best["label"] == "e" and "fastest point inside the budget is e" in why
    # A looser tolerance trades throughput for LUTs: b is within 50% of e (200 >= 390 * 0.5) and cheaper.
    best, why = recommend(ROWS, budget, tolerance=0.5)
    assert best["label"] == "b" and "fewer LUTs" in why
    # Without a LUT limit the fastest is d (400/s); e is within 5% with fewer LUTs.
    best, _ = recommend(ROWS, Budget(max_dsp=100), tolerance=0.05)
    assert best["label"] == "e"
    best, _ = recommend(ROWS, Budget(max_dsp=45), tolerance=0.0)
    assert best["label"] == "d"
    best, why = recommend(ROWS, Budget(min_fps=1000))
    assert best is None and "no point fits" in why


def _hw_row(rows, cols, batch, fmax, luts, cycles):
    point = Point(rows=rows, cols=cols, batch=batch)
    return {"label": point.label, "point": {**point.__dict__}, "fmax_mhz": fmax, "fmax_source": "estimate",
            "cycles_per_inference": cycles, "cycles_per_batch": cycles * batch, "latency_ms": 0.0,
            "fps": fmax * 1e6 / cycles, "resources": {"packed_luts": luts, "ffs": luts, "dsp": 10, "bram": 10}}


def _pnr_result():
    rows = [_hw_row(8, 8, 8, 75.0, 27000, 55000), _hw_row(8, 8, 32, 75.0, 27000, 49000),   # one hardware
            _hw_row(6, 6, 8, 78.0, 20000, 80000), _hw_row(12, 6, 8, 73.0, 29000, 47000),
            _hw_row(4, 4, 8, 82.0, 14000, 160000)]
    budget = Budget(max_luts=30000, max_dsp=100, max_bram=100)
    chosen, why = recommend(rows, budget, 0.05)
    inside = [r for r in rows if not fits_budget(r, budget)]
    return {"all": rows, "recommended": chosen, "why": why, "tolerance": 0.05,
            "in_budget_frontier": pareto(inside)}, budget


def test_finalists_are_the_recommended_point_and_its_nearest_distinct_hardware():
    result, _ = _pnr_result()
    # 12x6 (1,553/s) is the fastest in budget; 8x8 b32 (1,531/s) is within 5% and cheaper: recommended.
    assert result["recommended"]["label"] == "8x8 64b carry b32"
    names = [r["label"] for r in finalists(result, 3)]
    # 8x8 b8 is the same hardware as the recommended point: skipped; then the nearest in throughput.
    assert names == ["8x8 64b carry b32", "12x6 64b carry b8", "6x6 64b carry b8"]
    assert [r["label"] for r in finalists(result, 1)] == ["8x8 64b carry b32"]
    assert finalists(result, 0) == []


def test_finalists_always_hold_the_fastest_point_in_the_budget():
    result, _ = _pnr_result()
    extra = _hw_row(8, 6, 8, 76.0, 24000, 50000)          # 1,520/s: nearer the recommended 1,531/s than 12x6
    result["in_budget_frontier"] = pareto(result["in_budget_frontier"] + [extra])
    names = [r["label"] for r in finalists(result, 2)]
    assert names == ["8x8 64b carry b32", "12x6 64b carry b8"]          # the fastest (1,553/s) before the nearest
    assert [r["label"] for r in finalists(result, 3)][2] == "8x6 64b carry b8"


def test_measured_fmax_and_placed_luts_decide_the_recommendation():
    result, budget = _pnr_result()
    key = lambda r: json.dumps({k: v for k, v in r["point"].items() if k != "batch"}, sort_keys=True)  # noqa: E731
    by = {r["label"]: r for r in result["all"]}
    measured = {  # 8x8 placed slower than estimated, 12x6 faster but over the LUT budget as placed, 6x6 as guessed
        key(by["8x8 64b carry b32"]): {"fmax_mhz": 60.0, "packed_luts": 27500, "dsp": 10, "bram": 10, "report": "a"},
        key(by["12x6 64b carry b8"]): {"fmax_mhz": 76.0, "packed_luts": 30500, "dsp": 10, "bram": 10, "report": "b"},
        key(by["6x6 64b carry b8"]): {"fmax_mhz": 78.0, "packed_luts": 20100, "dsp": 10, "bram": 10, "report": "c"}}
    apply_place_and_route(result, measured, budget)
    assert result["recommended_before_pnr"] == "8x8 64b carry b32"
    # Measured: 8x8 b32 1,224/s, 8x8 b8 1,091/s, 6x6 975/s; 12x6 is out (30,500 LUTs placed > 30,000).
    assert result["recommended"]["label"] == "8x8 64b carry b32"
    for label in ("8x8 64b carry b8", "8x8 64b carry b32"):      # every batch of a placed design is updated
        row = by[label]
        assert row["fmax_mhz"] == 60.0 and row["fmax_estimated_mhz"] == 75.0 and row["placed"]["packed_luts"] == 27500
        assert row["fps"] == pytest.approx(60.0e6 / row["cycles_per_inference"])
        assert row["fmax_source"].startswith("measured")
    assert "after place-and-route of 3 finalists" in result["why"] and "12x6" not in result["recommended"]["label"]
    assert by["4x4 64b carry b8"]["fmax_source"] == "estimate"      # not a finalist: untouched
    # A finalist that overtakes: 6x6 placed at 120 MHz is 1,500/s, faster than the 8x8's 1,224/s.
    result, budget = _pnr_result()
    measured[key(by["6x6 64b carry b8"])]["fmax_mhz"] = 120.0
    by = {r["label"]: r for r in result["all"]}
    apply_place_and_route(result, measured, budget)
    assert result["recommended"]["label"] == "6x6 64b carry b8"
    assert "before place-and-route it was 8x8 64b carry b32" in result["why"]


def test_fmax_estimate_hits_the_measured_points_and_interpolates():
    table = MEASURED_FMAX["ecp5-85k"]
    for pes, mhz in table.items():
        side = int(pes ** 0.5)
        assert fmax_estimate("ecp5-85k", side, side)[0] == mhz
    mid, source = fmax_estimate("ecp5-85k", 8, 16)          # 128 PEs: between 64 and 256
    assert table[256] < mid < table[64] and source.startswith("estimate")
    far, source = fmax_estimate("ecp5-85k", 32, 32)
    assert far < table[256] and "extrapolated" in source


# ---- A small sweep end to end -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from sw.model_io import save_quantized
    from sw.quantize import quantize
    from sw.testing import random_images, random_network, random_params
    rng = np.random.default_rng(99)
    net = random_network(rng, input_shape=(6, 6, 1), conv_layers=1, dense_layers=1, channels=(3,))
    qnet = quantize(net, random_params(rng, net), random_images(rng, net, 8))
    path = tmp_path_factory.mktemp("m") / "tiny.npz"
    save_quantized(path, qnet)
    return path


def test_small_sweep(tiny_model, tmp_path):
    result = explore(tiny_model, sizes=(2, 4), bus_bytes=(8,), multipliers=("carry", "fabric"), batch=2,
                     batches=(1, 2), depths=("default", "small"), refine=2, workers=1, say=lambda line: None)
    rows = result["all"]
    assert result["points"] == len(rows) >= 8
    assert result["frontier"] == pareto(rows)
    chosen = result["recommended"]
    assert chosen is not None and not fits_budget(chosen, Budget(**result["budget"]))
    # Every row's cycles are the compiled network's prediction for its configuration and batch.
    for r in rows[:3] + [chosen]:
        p = Point(**r["point"])
        predicted = compile_model(tiny_model, p.config).predicted_cycles(p.batch)
        assert r["layers"] == predicted and r["cycles_per_batch"] == sum(predicted.values())
        assert r["fps"] == pytest.approx(r["fmax_mhz"] * 1e6 * p.batch / r["cycles_per_batch"])
    # The PE multiplier changes resources, not cycles.
    carry = next(r for r in rows if r["point"]["pe_multiplier"] == "carry")
    fabric = next(r for r in rows if r["point"] == {**carry["point"], "pe_multiplier": "fabric"})
    assert carry["cycles_per_batch"] == fabric["cycles_per_batch"]
    assert carry["resources"]["luts"] < fabric["resources"]["luts"]


def test_cli_writes_table_json_csv_png(tiny_model, tmp_path, capsys):
    out = tmp_path / "x"
    assert main([str(tiny_model), "--sizes", "2,4", "--bus-bytes", "8", "--multipliers", "carry", "--batch", "2",
                 "--batches", "2", "--depths", "default", "--workers", "1", "--no-verify", "--max-luts", "14000",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Pareto frontier" in text and "recommended:" in text
    data = json.loads((out / "explore.json").read_text())
    assert data["budget"]["max_luts"] == 14000
    assert data["recommended"]["resources"]["packed_luts"] <= 14000
    assert (out / "frontier.csv").read_text().count("\n") == len(data["frontier"]) + 1
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_places_and_routes_the_finalists_before_it_recommends(tiny_model, tmp_path, capsys, monkeypatch):
    """The command's wiring: finalists go through place_and_route (here a stand-in with fixed figures: the real
    flow takes minutes), the table and JSON carry the measured figures, verification gets the final choice."""
    import sw.apps.explore as explore_mod
    calls = []

    def fake_pnr(job):
        target, fields, build_dir, timeout = job
        calls.append(Point(**fields).label)
        return {"fmax_mhz": 50.0 + fields["rows"], "packed_luts": 1000 * fields["rows"] * fields["cols"],
                "dsp": 8, "bram": 13, "report": f"fake-{fields['rows']}x{fields['cols']}.json", "limited_by": None,
                "wall_s": 0.0}

    verified = []
    monkeypatch.setattr(explore_mod, "place_and_route", fake_pnr)
    monkeypatch.setattr(explore_mod, "verify", lambda result, **kw: verified.append(result["recommended"]["label"])
                        or {"ok": True, "rtl": {"equal": True}, "resources": {}})
    out = tmp_path / "x"
    assert main([str(tiny_model), "--sizes", "2,4", "--bus-bytes", "8", "--multipliers", "carry", "--batch", "2",
                 "--batches", "2", "--depths", "default", "--workers", "1", "--pnr-points", "2",
                 "--max-luts", "30000", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads((out / "explore.json").read_text())
    assert len(calls) == len(data["finalists"]) == 2 and data["recommended_before_pnr"] == calls[0]
    assert "finalists after place-and-route:" in text and "placed" in text
    chosen = data["recommended"]
    assert chosen["fmax_source"].startswith("measured") and verified == [chosen["label"]]
    assert chosen["fmax_mhz"] == 50.0 + chosen["point"]["rows"]
    assert chosen["placed"]["packed_luts"] == 1000 * chosen["point"]["rows"] * chosen["point"]["cols"]


def test_verify_reads_a_finalists_report_instead_of_running_the_flow_again(tmp_path, monkeypatch):
    import hw.fpga.flow
    import hw.fpga.synth_only
    import sw.apps.explore as explore_mod
    result, budget = _pnr_result()
    chosen = result["recommended"]
    point = Point(**chosen["point"])
    model = load_model("ecp5-85k")
    pred = model.predict(point.accelerator_params)
    report = tmp_path / "synth-ecp5-85k-8x8.json"
    report.write_text(json.dumps({"fmax_mhz": 60.0, "report_path": str(report), "limited_by": None,
                                  "resources": {"luts": {"count": 27500}}}))
    chosen["placed"] = {"packed_luts": 27500, "dsp": 10, "bram": 10, "report": str(report)}
    result.update(target="ecp5-85k", model="m.npz")
    chosen["layers"] = {"l": chosen["cycles_per_batch"]}
    monkeypatch.setattr(explore_mod, "rtl_cycles", lambda *a, **k: {
        "total": chosen["cycles_per_batch"], "layers": chosen["layers"], "outputs_match": True})
    monkeypatch.setattr(hw.fpga.synth_only, "synth_cells", lambda **k: {"resources": {
        "luts": pred["luts"], "ffs": pred["ffs"], "dsp": pred["dsp"], "bram": pred["bram"]}})
    monkeypatch.setattr(hw.fpga.flow, "synthesize", lambda **k: pytest.fail("the flow ran again"))
    checks = explore_mod.verify(result, say=lambda line: None)
    assert checks["ok"] and checks["pnr"]["fmax_mhz"] == 60.0 and checks["pnr"]["packed_luts"] == 27500
    assert checks["pnr"]["estimated_mhz"] == chosen["fmax_mhz"] == 75.0


def test_bad_options_are_one_line(tiny_model, capsys):
    assert main([str(tiny_model), "--multipliers", "quantum", "--no-verify"]) == 2
    assert main(["no/such/model.npz", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "quantum" in err and "not found" in err


def test_flow_builds_and_names_other_accelerator_parameters():
    from hw.fpga.flow import build_design, params_tag, report_path
    acc = build_design("accelerator", rows=2, cols=2, accelerator_params={"data_width": 128, "act_depth": 1024})
    assert acc.config.bus_bytes == 16 and acc.config.act_depth == 1024
    assert params_tag({}) == "" and params_tag({"data_width": 128, "act_depth": 1024}) == "-a1024-bus128"
    assert report_path("ecp5-85k", "accelerator", 2, 2).name == "synth-ecp5-85k-2x2.json"
    assert report_path("ecp5-85k", "accelerator", 2, 2, accelerator_params={"data_width": 32}).name == \
        "synth-ecp5-85k-2x2-bus32.json"
    with pytest.raises(ValueError, match="acc_depth"):
        params_tag({"acc_depth": 256})
    point = Point(4, 4, bus_bytes=16, act_depth=1024)
    assert point.flow_params == {"act_depth": 1024, "data_width": 128}
