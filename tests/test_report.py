"""Reports from fake posteriors: no MCMC runs here (ArviZ's habit)."""

import base64
import io
import re
from dataclasses import fields, replace

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from lrplan.bayes import Diagnostics
from lrplan.curve.calibrate import RATE_SITES
from lrplan.curve.fit import CurveFit, FitConfig
from lrplan.curve.model import GroupKey
from lrplan.curve.predict import CurvePrediction
from lrplan.curve.prepare import area
from lrplan.data import load_runs
from lrplan.evaluate.simulate import simulate_curves
from lrplan.priors import load_priors
from lrplan.report import build
from lrplan.report.document import ReportError, render_html, save_report
from lrplan.report.transfer import sweep_optima
from lrplan.targets import TargetError, report_results
from lrplan.transfer.decide import PlanResult, Target
from lrplan.transfer.fit import TransferConfig, TransferFit

TRUTH = dict(L0=2.8, A=1.0, alpha=0.45, B=0.17, C=2.0, beta=0.5, gamma=0.6)
SCHEDULES = {"cos": "cosine:final=0.1", "const": "constant"}
PEAK, STEPS, WARMUP, N, BATCH = 1e-3, 2000, 100, 1e8, 5e5
SECTION_IDS = ["summary", "data", "fit-quality", "transfer", "schedules", "diagnostics"]
GOOD = Diagnostics(r_hat_max=1.002, ess_bulk_min=450.0, divergences=0)
BAD = Diagnostics(r_hat_max=1.2, ess_bulk_min=35.0, divergences=7)


def build_report(fit=None, **kwargs):
    """Compute what a report shows (`report_results`), then build it from those results."""
    return build.build_report(report_results(fit, **kwargs))


def write_report(path, fit=None, **kwargs):
    """`report_results`, then `lrplan.report.build.write_report`."""
    return build.write_report(path, report_results(fit, **kwargs))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    table, meta = simulate_curves("multipower", TRUTH, SCHEDULES, steps=STEPS, peak_lr=PEAK,
                                  warmup_steps=WARMUP, every=50, noise=0.001, params=N,
                                  tokens_per_step=BATCH, seed=2)
    table.to_csv(d / "runs.csv", index=False)
    meta.to_csv(d / "meta.csv", index=False)
    return load_runs(d / "runs.csv", meta=d / "meta.csv")


def fake_fit(runs, diagnostics=GOOD, chains=2, draws=100) -> CurveFit:
    """A CurveFit whose draws scatter around the simulation's truth, shaped (chain, draw)."""
    rng = np.random.default_rng(0)
    samples = {}
    for k, v in {**TRUTH, "half_life": 0.3}.items():
        samples[k] = v * np.exp(0.01 * rng.standard_normal((chains, draws)))
    samples["L0_group"] = samples["L0"][..., None]
    for k, v in zip(RATE_SITES, (0.002, 0.0, 0.01), strict=True):
        samples[k] = np.full((chains, draws), v)
    keep = [r.steps >= max(r.warmup_steps, 1) for r in runs]
    config = FitConfig(
        law="multipower", lr_ref=PEAK, n_ref=N, size_law=False, groups=(GroupKey(N, BATCH, PEAK),),
        noise=0.001, discrepancy=0.002, discrepancy_anneal=0.0, discrepancy_growth=0.01,
        area_ref=float(area(runs["cos"].lr, [STEPS], PEAK)[0]), seed=0, chains=chains,
        num_warmup=100, num_samples=draws,
        notes=("run stray: no per-step LR (give an lr column or schedule + peak_lr); not used",),
    )
    observed = {
        "run": np.concatenate([np.full(k.sum(), r.name, dtype=object) for r, k in zip(runs, keep, strict=True)]),
        "step": np.concatenate([r.steps[k] for r, k in zip(runs, keep, strict=True)]),
        "loss": np.concatenate([r.loss[k] for r, k in zip(runs, keep, strict=True)]),
        "group": np.concatenate([np.zeros(k.sum(), dtype=int) for k in keep]),
    }
    return CurveFit(config=config, priors=load_priors("multipower"), samples=samples,
                    diagnostics=diagnostics, observed=observed)


class FakeTransferFit:
    """Duck-typed transfer fit: log lr* = log 1e-3 - 0.3 log(N/1e8) - 0.3 log(D/1e10) + spread."""

    version = "test"

    def __init__(self, chains=2, draws=100):
        rng = np.random.default_rng(1)
        self.samples = {"c0": np.log(1e-3) + 0.05 * rng.standard_normal((chains, draws)),
                        "c_n": -0.3 + 0.02 * rng.standard_normal((chains, draws)),
                        "c_d": -0.3 + 0.02 * rng.standard_normal((chains, draws))}
        self.priors = load_priors("transfer")
        self.diagnostics = GOOD
        rows = []
        for n, d in [(5e7, 1e10), (1e8, 1e10), (1e8, 2e10)]:
            opt = float(np.median(self.lr_star(n, d, BATCH)))
            for i, f in enumerate([0.25, 0.5, 1.0, 2.0, 4.0, 8.0]):
                diverged = f == 8.0
                loss = np.nan if diverged else 3.0 + 0.05 * np.log(f) ** 2
                rows.append({"run": f"n{n:g}_d{d:g}_{i}", "params": n, "tokens": d,
                             "tokens_per_step": BATCH, "lr": opt * f, "loss": loss,
                             "diverged": diverged, "unannealed": np.nan if diverged else 0.1,
                             "final": True})
        self.points = pd.DataFrame(rows)
        self.config = TransferConfig(lr_law="loglinear", bowl="symmetric", n0=1e8, d0=1e10, b0=BATCH,
                                     lr_ref=1e-3, schedule_known=True, seed=0, chains=chains,
                                     num_warmup=100, num_samples=draws,
                                     notes=("run odd: no params; not used",))
        self.loo = pd.DataFrame({"rank": [0, 1], "elpd_loo": [12.3, 10.1], "p_loo": [4.2, 3.9],
                                 "elpd_diff": [0.0, 2.2], "weight": [0.8, 0.2], "se": [1.1, 1.3],
                                 "dse": [0.0, 0.9], "warning": [False, False]},
                                index=["straight", "curved"])

    def lr_star(self, params, tokens, tokens_per_step, unannealed=0.0):
        s = {k: v.reshape(-1) for k, v in self.samples.items()}
        return np.exp(s["c0"] + s["c_n"] * np.log(params / 1e8) + s["c_d"] * np.log(tokens / 1e10))

    def expected_loss(self, params, tokens, tokens_per_step, lr, unannealed, *, lr_shift=0.0,
                      loss_shift=0.0, log_kappa_shift=0.0):
        centre = np.log(self.lr_star(params, tokens, tokens_per_step)) + lr_shift
        u = np.log(np.atleast_1d(lr))[None, :] - np.asarray(centre)[:, None]
        return 3.0 + np.asarray(loss_shift)[..., None] + 0.05 * np.exp(log_kappa_shift)[..., None] * u**2

    def cell_effects(self, params, tokens, tokens_per_step, rng, memo=None):
        """No cell-level effects: the law alone."""
        zero = np.zeros(self.samples["c0"].size)
        return {"lr": zero, "loss": zero, "log_kappa": zero, "lr_new": zero}

    def noise(self):
        return np.full(self.samples["c0"].size, 0.01)

    # the model's own predictive noise (Student-t at the fitted scale), not a copy
    predictive_loss = TransferFit.predictive_loss

    def lr_grid(self, params, tokens, tokens_per_step, size=401):
        centre = np.log(np.median(self.lr_star(params, tokens, tokens_per_step)))
        return np.exp(np.linspace(centre - 2.0, centre + 1.5, size))

    def divergence_probability(self, params, tokens, tokens_per_step, lr, lr_shift=0.0):
        return np.zeros((self.samples["c0"].size, np.size(lr)))


@pytest.fixture(scope="module")
def plan():
    tfit = FakeTransferFit()
    target = Target(params=4e8, tokens=8e10, tokens_per_step=BATCH, schedule="cosine:final=0.1",
                    steps=STEPS, warmup_steps=WARMUP)
    lr_star = tfit.lr_star(target.params, target.tokens, target.tokens_per_step)
    grid = np.exp(np.linspace(np.log(1e-4), np.log(1e-2), 81))
    loss = 2.6 + 0.04 * (np.log(grid)[None, :] - np.log(lr_star)[:, None]) ** 2
    rec = int(np.argmin(loss.mean(axis=0)))
    steps = np.linspace(WARMUP, STEPS, 30).astype(int)
    curves = {}
    for spec, end in (("cosine:final=0.1", 2.60), ("wsd:decay=0.2", 2.59)):
        law = end + 0.5 * (STEPS / steps)[None, :] ** 0.5 - 0.5 + 0.003 * np.arange(200)[:, None] / 200
        curves[spec] = CurvePrediction(steps=steps, draws=law * 1.001, law=law, group=None)
    kwargs = dict(target=target, fit=tfit, lr_grid=grid, loss_grid=loss, recommended_lr=float(grid[rec]),
                  lr_star=lr_star, band=(float(grid[rec - 5]), float(grid[rec + 5])),
                  final_loss=loss[:, rec], compare={3e-3: loss[:, 60] - loss[:, rec]}, curves=curves,
                  notes=("the target's size is 4x outside the fitted sizes",))
    if "divergence" in {f.name for f in fields(PlanResult)}:
        kwargs["divergence"] = (grid > 6e-3).astype(float)
    return PlanResult(**kwargs)


@pytest.fixture(scope="module")
def good_html(runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "report.html"
    write_report(path, fake_fit(runs), runs=runs)
    return path.read_text()


@pytest.fixture(scope="module")
def plan_html(runs, plan, tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "report.html"
    write_report(path, fake_fit(runs), plan=plan, runs=runs)
    return path.read_text()


def _images(text):
    return re.findall(r"<img [^>]*>", text)


def _check_png(data_uri_tag):
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', data_uri_tag)
    assert m, data_uri_tag[:80]
    raw = base64.b64decode(m.group(1), validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(io.BytesIO(raw), format="png")
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


@pytest.mark.parametrize("which", ["good_html", "plan_html"])
def test_html_is_self_contained(which, request):
    text = request.getfixturevalue(which)
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text, re.I)
    assert "@import" not in text and "url(" not in text
    imgs = _images(text)
    assert len(imgs) >= 5
    for tag in imgs:
        _check_png(tag)


@pytest.mark.parametrize("which", ["good_html", "plan_html"])
def test_every_section_present_labelled_and_in_order(which, request):
    text = request.getfixturevalue(which)
    titles = {"summary": "Summary", "data": "Data", "fit-quality": "Fit quality", "transfer": "Transfer",
              "schedules": "Target schedules", "diagnostics": "Diagnostics"}
    positions = []
    for sid in SECTION_IDS:
        m = re.search(rf'<section id="{sid}" aria-labelledby="{sid}-h"><h2 id="{sid}-h">([^<]+)</h2>', text)
        assert m, sid
        assert m.group(1) == titles[sid]
        assert f'href="#{sid}"' in text
        positions.append(m.start())
    assert positions == sorted(positions)


def test_summary_and_tables_say_what_matters(good_html):
    summary = good_html.split('id="summary"')[1].split("</section>")[0]
    assert "Predicted final loss" in summary and "95% interval" in summary
    assert "Schedule:" in summary and "Uncertainty:" in summary
    for run in ("cos", "const"):
        assert f"<td>{run}</td>" in good_html
    assert "run stray: no per-step LR" in good_html  # the loader's exclusions are listed
    assert "No LR sweep in this fit" in good_html and "lrplan plan" in good_html
    for spec in ("cosine:final=0.1", "wsd:decay=0.2", "constant"):
        assert f"<td>{spec}</td>" in good_html.split('id="schedules"')[1]
    # the parameter table says what each of the law's parameters is, and only those it has
    diagnostics = good_html.split('id="diagnostics"')[1]
    assert "<li>alpha: exponent of the power law" in diagnostics
    assert "<li>L_ref:" not in diagnostics  # one size: no size law


def test_plan_report_has_transfer_figures_and_loo(plan_html, plan):
    transfer = plan_html.split('<section id="transfer"')[1].split("</section>")[0]
    for fig in ("fig-loss_vs_lr", "fig-lr_star"):
        assert f'id="{fig}"' in transfer
    assert "Empirical optima" in transfer
    # the next-run table: five candidate sweeps, each of three LRs
    nxt = transfer.split("What to run next")[1]
    assert nxt.count("<tr>") == 1 + 5 and nxt.count("<td>") >= 5
    summary = plan_html.split('id="summary"')[1].split("</section>")[0]
    assert f"{plan.recommended_lr:.3g}" in summary
    assert "Use a peak learning rate" in summary and "would cost" in summary
    assert "PSIS-LOO" in plan_html and "<td>curved</td>" in plan_html
    assert 'id="fig-prior_posterior_transfer"' in plan_html
    # the plan's own curves are the candidates, at the recommended LR
    assert "<td>wsd:decay=0.2</td>" in plan_html.split('id="schedules"')[1]


def test_warning_banner_only_when_diagnostics_fail(runs, good_html):
    assert 'class="warning"' not in good_html
    report = build_report(fake_fit(runs, diagnostics=BAD), schedules=["constant"])
    text = render_html(report)
    banner = re.search(r'<div class="warning"[^>]*>(.*?)</div>', text, re.S)
    assert banner and banner.start() < text.index('<section id="summary"')
    for what in ("R-hat 1.200", "ESS 35", "7 divergent"):
        assert what in banner.group(1)


def test_one_chain_fit_warns_that_r_hat_is_unavailable(runs):
    fit = fake_fit(runs, diagnostics=replace(GOOD, r_hat_max=float("nan")), chains=1, draws=200)
    report = build_report(fit, schedules=["constant"])
    assert any("one chain" in w for w in report.warnings)


def test_without_runs_the_report_says_how_to_get_bands(runs):
    report = build_report(fake_fit(runs), schedules=["constant"])
    quality = next(s for s in report.sections if s.id == "fit-quality")
    assert "--runs" in quality.html and [f.name for f in quality.figures] == ["run_curves"]


def test_markdown_writes_the_images_it_links(runs, tmp_path):
    report = build_report(fake_fit(runs), runs=runs, schedules=["constant", "wsd:decay=0.2"])
    path = save_report(report, tmp_path / "rep.md")
    text = path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == len(report.figures) >= 4
    for link in links:
        assert link.startswith("rep_files/") and not link.startswith("/")
        img = mpimg.imread(tmp_path / link)
        assert img.shape[0] > 200
    for sid in SECTION_IDS:
        assert f'<a id="{sid}"></a>' in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep.md", "rep_files"]


def test_atomic_write_leaves_no_temp_files(runs, tmp_path):
    report = build_report(fake_fit(runs), schedules=["constant"])
    save_report(report, tmp_path / "a.html")
    save_report(report, tmp_path / "a.html")  # overwrite in place
    save_report(report, tmp_path / "b.md")
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    assert "a.html" in names and "b.md" in names


def test_bad_suffix_or_folder_is_a_clear_error(runs, tmp_path):
    with pytest.raises(ReportError, match=r"\.html"):
        write_report(tmp_path / "r.pdf", fake_fit(runs))
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "missing" / "r.html", fake_fit(runs))


def test_cell_optima_uses_only_upward_parabolas_inside_the_range():
    lr = np.array([1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    x = np.log(lr)
    bowl = 3.0 + 0.05 * (x - np.log(1e-3)) ** 2
    rows = [dict(params=1e8, tokens=1e10, tokens_per_step=1.0, lr=a, loss=b, diverged=False, final=True)
            for a, b in zip(lr, bowl, strict=True)]
    rows += [dict(params=2e8, tokens=1e10, tokens_per_step=1.0, lr=a, loss=b, diverged=False, final=True)
             for a, b in zip(lr, 3.0 - 0.01 * x, strict=True)]  # monotone: no optimum inside
    rows += [dict(params=4e8, tokens=1e10, tokens_per_step=1.0, lr=a, loss=b, diverged=d, final=True)
             for a, b, d in zip(lr, bowl, [False, False, True, True, True], strict=True)]  # 2 usable LRs
    cells = sweep_optima(pd.DataFrame(rows))
    assert len(cells) == 1 and cells[0]["params"] == 1e8
    assert cells[0]["lr"] == pytest.approx(1e-3, rel=1e-6)


def test_cli_report(runs, tmp_path):
    from click.testing import CliRunner

    from lrplan.cli import cli
    from lrplan.curve.io import save_fit

    save_fit(fake_fit(runs), tmp_path / "fit.nc")
    runs_csv = tmp_path / "runs.csv"
    pd.DataFrame([{"run": r.name, "step": s, "loss": y, "lr": r.lr[s - 1]}
                  for r in runs for s, y in zip(r.steps, r.loss, strict=True)]).to_csv(runs_csv, index=False)
    meta = tmp_path / "meta.csv"
    pd.DataFrame([{"run": r.name, "params": N, "tokens_per_step": BATCH, "peak_lr": PEAK,
                   "warmup_steps": WARMUP, "total_steps": STEPS, "schedule": r.schedule}
                  for r in runs]).to_csv(meta, index=False)
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "fit.nc"), "--runs", str(runs_csv),
                                   "--meta", str(meta), "--schedule", "constant", "--schedule",
                                   "cosine:final=0.1", "--steps", "3000", "--peak-lr", "1e-3",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output
    text = out.read_text()
    assert "3000 steps" in text and len(_images(text)) >= 5
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "fit.nc"), "-o", str(tmp_path / "r.txt")])
    assert res.exit_code == 2 and "unknown report format" in res.output


def test_lr_schedule_of_candidates_matches_target(runs):
    report = build_report(fake_fit(runs), schedules=["wsd:decay=0.2"], steps=3000, peak_lr=5e-4,
                          warmup_steps=0)
    sched = next(s for s in report.sections if s.id == "schedules")
    assert "3000 steps, peak LR 0.0005, 0 warmup steps" in sched.html


# ---------------------------------------------------------------- a report from a real plan alone

@pytest.fixture(scope="module")
def sweep_csv():
    from lrplan.examples import example_path

    return example_path("sweep", "runs.csv")


@pytest.fixture(scope="module")
def real_plan(sweep_csv):
    from lrplan.transfer.decide import plan as decide
    from lrplan.transfer.fit import fit_transfer, transfer_points

    points, notes = transfer_points(load_runs(sweep_csv))
    tfit = fit_transfer(points, seed=0, chains=2, num_warmup=100, num_samples=100, notes=tuple(notes))
    target = Target(params=1.2e9, tokens=2e10, tokens_per_step=5e5, schedule="cosine:final=0.1",
                    steps=40000, warmup_steps=400)
    return decide(tfit, target, compare_lrs=(3e-3,), schedules=("wsd:decay=0.2",))


def test_report_from_a_plan_alone(real_plan, tmp_path):
    path = write_report(tmp_path / "plan.html", plan=real_plan)
    text = path.read_text()
    assert "<script" not in text.lower() and not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text)
    for sid in SECTION_IDS:
        assert re.search(rf'<section id="{sid}" aria-labelledby="{sid}-h"><h2 id="{sid}-h">', text), sid
    imgs = _images(text)
    assert len(imgs) >= 5
    for tag in imgs:
        _check_png(tag)
    section = lambda sid: text.split(f'<section id="{sid}"')[1].split("</section>")[0]  # noqa: E731
    data = section("data")
    pts = real_plan.fit.points
    assert all(f"<td>{r}</td>" in data for r in pts["run"])  # every run, diverged ones included
    assert pts["diverged"].any() and "<td>diverged</td>" in data
    quality = section("fit-quality")
    assert 'id="fig-transfer_cells"' in quality and "95% predictive covers" in quality
    assert 'id="fig-prior_posterior_transfer"' in section("diagnostics")
    assert "transfer fit" in section("diagnostics") and "curve fit" not in section("diagnostics")
    # the bundled sweep has one schedule: the plan predicts the target's and does not rank others
    assert "<td>cosine:final=0.1</td>" in section("schedules")
    assert "<td>wsd:decay=0.2</td>" not in section("schedules")
    assert "Use a peak learning rate" in section("summary")
    # the figure sits after its own table, not at the end of the section
    assert quality.index("In-sample agreement") < quality.index('id="fig-transfer_cells"')


def test_plan_report_warns_about_the_transfer_fit_only(real_plan):
    bad = replace(real_plan, fit=replace(real_plan.fit, diagnostics=BAD))
    report = build_report(plan=bad)
    assert len(report.warnings) == 1 and "transfer fit" in report.warnings[0]
    with pytest.raises(TargetError, match="curve fit"):
        build_report(plan=real_plan, schedules=["constant"])
    with pytest.raises(TargetError):
        build_report()


def test_cli_plan_report_markdown(sweep_csv, real_plan, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    import lrplan.transfer.fit
    from lrplan.cli import cli

    monkeypatch.setattr(lrplan.transfer.fit, "fit_transfer", lambda points, **kw: real_plan.fit)  # no 2nd NUTS
    out = tmp_path / "plan.md"
    res = CliRunner().invoke(cli, ["plan", str(sweep_csv), "--params", "1.2e9", "--tokens", "2e10",
                                   "--json", "--report", str(out)])
    assert res.exit_code == 0, res.output
    json.loads(res.stdout)  # stdout stays one JSON document; the report's path goes to stderr
    assert str(out) in res.stderr
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 4 and all(link.startswith("plan_files/") for link in links)
    for link in links:
        assert mpimg.imread(tmp_path / link).shape[0] > 200
    for sid in SECTION_IDS:
        assert f'<a id="{sid}"></a>' in text
    res = CliRunner().invoke(cli, ["plan", str(sweep_csv), "--params", "1.2e9", "--tokens", "2e10",
                                   "--report", str(tmp_path / "plan.pdf")])
    assert res.exit_code == 2 and ".html" in res.output  # refused before any fit


def test_the_report_only_renders_finished_results(runs, plan, monkeypatch):
    import lrplan.curve.predict
    import lrplan.targets
    import lrplan.transfer.nextrun

    results = report_results(fake_fit(runs), plan=plan, runs=runs)

    def refuse(*args, **kwargs):
        raise AssertionError("building a report computed a prediction")

    for module, name in [(lrplan.targets, "predict_curve"), (lrplan.targets, "next_run"),
                         (lrplan.curve.predict, "predict_curve"), (lrplan.transfer.nextrun, "next_run")]:
        monkeypatch.setattr(module, name, refuse)
    report = build.build_report(results)
    assert [s.id for s in report.sections] == SECTION_IDS
    assert "What to run next" in next(s for s in report.sections if s.id == "transfer").html


def test_curve_fit_to_json_is_the_fit_part_of_fit_json(runs):
    import json

    fit = fake_fit(runs)
    doc = json.loads(json.dumps(fit.to_json(), allow_nan=False))
    assert list(doc) == ["runs", "points", "groups", "discrepancy", "discrepancy_anneal",
                         "discrepancy_growth", "noise", "diagnostics", "notes"]
    assert doc["runs"] == len(runs) and doc["points"] == len(fit.observed["step"]) and doc["groups"] == 1
    assert doc["noise"] == 0.001 and doc["notes"] == list(fit.config.notes)
