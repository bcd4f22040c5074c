import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrplan.errors import LrplanError, ScheduleError
from lrplan.schedules import (
    SCHEDULE_NAMES,
    lr_schedule,
    parse_spec,
    read_lr_file,
    steps_for,
    write_lr_file,
)

PEAK = 3e-4
FAST = settings(max_examples=50, deadline=None)


# ---------------------------------------------------------------------------- parse_spec


def test_schedule_names():
    assert SCHEDULE_NAMES == (
        "constant", "cosine", "linear", "wsd", "power", "invsqrt", "multistep", "twostage",
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cosine", ("cosine", {})),
        ("cosine:final=0.05", ("cosine", {"final": 0.05})),
        (" wsd : decay = 0.1 , shape = sqrt ", ("wsd", {"decay": 0.1, "shape": "sqrt"})),
        ("multistep:milestones=0.5|0.75,gamma=0.1",
         ("multistep", {"milestones": (0.5, 0.75), "gamma": 0.1})),
        ("multistep:milestones=0.5", ("multistep", {"milestones": (0.5,)})),
        ("twostage:at=8000,ratio=0.1", ("twostage", {"at": 8000, "ratio": 0.1})),
        ("twostage:at=8e3,ratio=1e-1", ("twostage", {"at": 8000, "ratio": 0.1})),
        ("power:tokens_per_step=4e6,a=3,b=-0.5", ("power", {"tokens_per_step": 4e6, "a": 3.0,
                                                            "b": -0.5})),
        ("constant:warmup=100", ("constant", {"warmup": 100})),
    ],
)
def test_parse_spec(spec, expected):
    name, params = parse_spec(spec)
    assert (name, params) == expected
    for key in ("at", "warmup"):
        if key in params:
            assert type(params[key]) is int


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("", ["empty", "cosine"]),
        ("cosin", ["unknown schedule 'cosin'", "constant, cosine, linear, wsd, power"]),
        ("cosine:finl=0.1", ["unknown key 'finl'", "final, warmup"]),
        ("cosine:final=1.5", ["final", "[0, 1]"]),
        ("cosine:final=-0.1", ["final", "[0, 1]"]),
        ("cosine:final=abc", ["'abc'", "not a finite number"]),
        ("cosine:final=nan", ["not a finite number"]),
        ("cosine:final=0.1,final=0.2", ["given twice"]),
        ("cosine:final", ["key=value"]),
        ("cosine:", ["nothing after ':'"]),
        ("wsd:decay=1", ["decay", "(0, 1)"]),
        ("wsd:decay=0", ["decay", "(0, 1)"]),
        ("wsd:shape=quadratic", ["linear, sqrt, exp, cosine"]),
        ("multistep:milestones=0.9|0.8", ["increasing"]),
        ("multistep:milestones=0.5|x", ["list of finite numbers"]),
        ("multistep:milestones=0.5|1.2", ["(0, 1)"]),
        ("multistep:gamma=0", ["gamma", "(0, 1]"]),
        ("twostage:at=10.5,ratio=0.1", ["not an integer"]),
        ("twostage:at=0,ratio=0.1", ["at", ">= 1"]),
        ("power:tokens_per_step=0", ["tokens_per_step", "> 0"]),
        ("power:tokens_per_step=1e6,b=0.5", ["b", "<= 0"]),
        ("invsqrt:timescale=0", ["timescale", "> 0"]),
        ("constant:warmup=-1", ["warmup", ">= 0"]),
        ("constant:warmup=1.5", ["not an integer"]),
    ],
)
def test_parse_spec_errors(spec, fragments):
    with pytest.raises(ScheduleError) as info:
        parse_spec(spec)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert isinstance(info.value, LrplanError) and isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------- spot values


def test_warmup_ramp():
    lr = lr_schedule("constant", steps=10, peak_lr=PEAK, warmup_steps=4)
    np.testing.assert_allclose(lr[:4], PEAK * np.array([1, 2, 3, 4]) / 4, rtol=1e-15)
    np.testing.assert_array_equal(lr[4:], PEAK)
    assert lr.dtype == np.float64 and lr.shape == (10,)


def test_spec_warmup_overrides_argument():
    a = lr_schedule("cosine:warmup=5", steps=50, peak_lr=PEAK, warmup_steps=20)
    b = lr_schedule("cosine", steps=50, peak_lr=PEAK, warmup_steps=5)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("final", [0.0, 0.1, 0.5])
def test_cosine_midpoint_and_end(final):
    lr = lr_schedule(f"cosine:final={final}", steps=1100, peak_lr=PEAK, warmup_steps=100)
    # main part: steps 101..1100, p = (s - 100) / 1000; midpoint p = 0.5 is step 600
    assert lr[600 - 1] == pytest.approx((1 + final) / 2 * PEAK, rel=1e-12)
    assert lr[-1] == pytest.approx(final * PEAK, rel=1e-12, abs=1e-20)
    assert lr[100] < PEAK  # step 101 already has p = 1/1000 > 0


def test_linear():
    lr = lr_schedule("linear:final=0.2", steps=110, peak_lr=PEAK, warmup_steps=10)
    s = np.arange(11, 111)
    np.testing.assert_allclose(lr[10:], PEAK * (0.2 + 0.8 * (1 - (s - 10) / 100)), rtol=1e-12)
    assert lr[-1] == pytest.approx(0.2 * PEAK)
    assert lr_schedule("linear", steps=10, peak_lr=PEAK)[-1] == 0.0


@pytest.mark.parametrize("shape", ["linear", "sqrt", "exp", "cosine"])
@pytest.mark.parametrize("final", [0.0, 0.1])
def test_wsd_decay_start_and_end(shape, final):
    lr = lr_schedule(f"wsd:decay=0.2,final={final},shape={shape}", steps=1000, peak_lr=PEAK,
                     warmup_steps=50)
    start = 800  # round(1000 * (1 - 0.2))
    np.testing.assert_array_equal(lr[50:start], PEAK)  # steps 51..800 at the peak
    assert lr[start] < PEAK  # step 801 decays
    expected_final = 1e-3 if (shape == "exp" and final == 0.0) else final
    assert lr[-1] == pytest.approx(expected_final * PEAK, rel=1e-12, abs=1e-20)


def test_wsd_shapes_midpoint():
    kw = dict(steps=1000, peak_lr=1.0)
    mid = 900 - 1  # q = 0.5 at step 900 with the decay starting after step 800
    assert lr_schedule("wsd:final=0.1", **kw)[mid] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_schedule("wsd:final=0.1,shape=sqrt", **kw)[mid] == pytest.approx(
        0.1 + 0.9 * (1 - math.sqrt(0.5)))
    assert lr_schedule("wsd:final=0.1,shape=cosine", **kw)[mid] == pytest.approx(0.55)
    assert lr_schedule("wsd:final=0.01,shape=exp", **kw)[mid] == pytest.approx(0.1)


def test_twostage_switch():
    lr = lr_schedule("twostage:at=8000,ratio=0.1", steps=10000, peak_lr=3e-4, warmup_steps=500)
    assert lr[8000 - 1] == 3e-4  # step 8000 still at the peak
    assert lr[8001 - 1] == pytest.approx(3e-5)
    np.testing.assert_allclose(lr[8000:], 3e-5)


def test_multistep_factors():
    lr = lr_schedule("multistep:milestones=0.5|0.75,gamma=0.1", steps=100, peak_lr=1.0)
    assert lr[50 - 1] == 1.0
    assert lr[51 - 1] == pytest.approx(0.1)
    assert lr[75 - 1] == pytest.approx(0.1)
    assert lr[76 - 1] == pytest.approx(0.01)
    assert lr[-1] == pytest.approx(0.01)
    default = lr_schedule("multistep", steps=1000, peak_lr=1.0)
    assert default[801 - 1] == pytest.approx(0.316)
    assert default[901 - 1] == pytest.approx(0.316**2)


def test_invsqrt():
    lr = lr_schedule("invsqrt", steps=1000, peak_lr=1.0, warmup_steps=100)
    assert lr[99] == 1.0
    # timescale defaults to the warmup: lr = 1 / sqrt(1 + (s - 100) / 100)
    assert lr[400 - 1] == pytest.approx(0.5)
    lr = lr_schedule("invsqrt:timescale=10", steps=100, peak_lr=1.0)
    assert lr[30 - 1] == pytest.approx(0.5)
    assert lr_schedule("invsqrt", steps=4, peak_lr=1.0)[2] == pytest.approx(0.5)


def test_power():
    tps, a, b = 1e6, 4.6, -0.51
    lr = lr_schedule(f"power:tokens_per_step={tps:g}", steps=1000, peak_lr=1e-3,
                     warmup_steps=10)
    s = np.arange(11, 901)
    np.testing.assert_allclose(lr[10:900], np.minimum(1e-3, a * (s * tps) ** b), rtol=1e-12)
    at_start = a * (900 * tps) ** b
    # linear from the value at the decay start (step 900) to 0 at step 1000
    assert lr[950 - 1] == pytest.approx(at_start * 0.5, rel=1e-12)
    assert lr[-1] == 0.0
    # a high peak is never reached after warmup; a low one caps the stable phase
    capped = lr_schedule("power:tokens_per_step=1e3", steps=100, peak_lr=1e-5)
    np.testing.assert_array_equal(capped[:90], 1e-5)


def test_single_step():
    assert lr_schedule("constant", steps=1, peak_lr=0.5).tolist() == [0.5]
    assert lr_schedule("cosine", steps=1, peak_lr=1.0).tolist() == [pytest.approx(0.1)]


# ---------------------------------------------------------------------------- lr_schedule errors


@pytest.mark.parametrize(
    ("spec", "kwargs", "fragments"),
    [
        ("cosine", dict(steps=0, peak_lr=1.0), ["steps", ">= 1"]),
        ("cosine", dict(steps=10.0, peak_lr=1.0), ["steps", "integer"]),
        ("cosine", dict(steps=True, peak_lr=1.0), ["steps", "integer"]),
        ("cosine", dict(steps=10, peak_lr=0.0), ["peak_lr", "> 0"]),
        ("cosine", dict(steps=10, peak_lr=float("inf")), ["peak_lr", "finite"]),
        ("cosine", dict(steps=10, peak_lr="x"), ["peak_lr", "number"]),
        ("cosine", dict(steps=10, peak_lr=1.0, warmup_steps=10), ["warmup", "< steps = 10"]),
        ("cosine", dict(steps=10, peak_lr=1.0, warmup_steps=-1), ["warmup", ">= 0"]),
        ("cosine:warmup=10", dict(steps=10, peak_lr=1.0), ["warmup in spec", "< steps"]),
        ("power", dict(steps=10, peak_lr=1.0), ["needs tokens_per_step"]),
        ("twostage:at=5", dict(steps=10, peak_lr=1.0), ["needs ratio"]),
        ("twostage", dict(steps=10, peak_lr=1.0), ["needs at, ratio"]),
        ("twostage:at=11,ratio=0.1", dict(steps=10, peak_lr=1.0), ["at=11", "last step (10)"]),
        ("twostage:at=2,ratio=0.1", dict(steps=10, peak_lr=1.0, warmup_steps=3),
         ["end of warmup (3)"]),
        ("wsd:decay=0.01", dict(steps=10, peak_lr=1.0), ["no decay step", "at least 0.1"]),
        ("wsd:decay=0.9", dict(steps=10, peak_lr=1.0, warmup_steps=5), ["inside the 5-step"]),
        ("power:tokens_per_step=1,decay=0.9", dict(steps=10, peak_lr=1.0, warmup_steps=5),
         ["inside the 5-step"]),
        ("multistep:milestones=0.1|0.5", dict(steps=100, peak_lr=1.0, warmup_steps=20),
         ["first milestone", "step 10", "20-step warmup"]),
        ("nope", dict(steps=10, peak_lr=1.0), ["valid schedules"]),
    ],
)
def test_lr_schedule_errors(spec, kwargs, fragments):
    with pytest.raises(ScheduleError) as info:
        lr_schedule(spec, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


# ---------------------------------------------------------------------------- properties


@st.composite
def schedules(draw):
    """A valid (spec, steps, peak_lr, warmup) for every schedule."""
    name = draw(st.sampled_from(SCHEDULE_NAMES))
    steps = draw(st.integers(20, 3000))
    warmup = draw(st.integers(0, steps // 10))
    peak = draw(st.floats(1e-6, 1.0))
    fraction = st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-6, 1.0))
    keys = {}
    if name in ("cosine", "linear"):
        keys["final"] = draw(fraction)
    elif name == "wsd":
        keys["decay"] = draw(st.floats(0.05, 0.5))
        keys["final"] = draw(fraction)
        keys["shape"] = draw(st.sampled_from(["linear", "sqrt", "exp", "cosine"]))
    elif name == "power":
        keys["tokens_per_step"] = draw(st.floats(1e3, 1e7))
        keys["decay"] = draw(st.floats(0.05, 0.5))
        keys["b"] = draw(st.floats(-1.0, 0.0))
    elif name == "invsqrt":
        if draw(st.booleans()):
            keys["timescale"] = draw(st.floats(0.5, 1e4))
    elif name == "multistep":
        ms = draw(st.lists(st.floats(0.2, 0.95), min_size=1, max_size=4, unique=True))
        keys["milestones"] = "|".join(repr(m) for m in sorted(ms))
        keys["gamma"] = draw(st.floats(0.01, 1.0))
    elif name == "twostage":
        keys["at"] = draw(st.integers(max(warmup, 1), steps))
        keys["ratio"] = draw(st.floats(0.01, 1.0))
    spec = name + (":" + ",".join(f"{k}={v}" for k, v in keys.items()) if keys else "")
    return spec, steps, peak, warmup


@FAST
@given(schedules())
def test_schedule_properties(case):
    spec, steps, peak, warmup = case
    lr = lr_schedule(spec, steps=steps, peak_lr=peak, warmup_steps=warmup)
    assert lr.shape == (steps,) and lr.dtype == np.float64
    assert np.all(np.isfinite(lr))
    assert np.all(lr <= peak)
    # positive everywhere except possibly a final LR of 0 at the last step
    assert np.all(lr[:-1] > 0)
    assert lr[-1] >= 0
    if lr[-1] == 0:
        name, params = parse_spec(spec)
        assert name in ("power", "linear", "cosine", "wsd") and params.get("final", 0.0) == 0.0
    # warmup ramps linearly to the peak
    if warmup:
        np.testing.assert_allclose(lr[:warmup], peak * np.arange(1, warmup + 1) / warmup,
                                   rtol=1e-12)
    # non-increasing after warmup (twostage and constant too: every schedule here)
    assert np.all(np.diff(lr[warmup:]) <= 0)
    # cumulative area strictly increases while the LR is positive
    area = np.cumsum(lr)
    assert np.all(np.diff(area[:-1]) > 0)
    assert np.all(np.diff(area) >= 0)


@FAST
@given(schedules())
def test_schedule_scales_with_peak(case):
    spec, steps, peak, warmup = case
    if spec.startswith("power"):  # power's stable phase is absolute, capped by the peak
        return
    one = lr_schedule(spec, steps=steps, peak_lr=1.0, warmup_steps=warmup)
    np.testing.assert_allclose(lr_schedule(spec, steps=steps, peak_lr=peak,
                                           warmup_steps=warmup), peak * one, rtol=1e-12)


@FAST
@given(st.integers(20, 2000), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_lower_final_means_less_area(steps, f1, f2):
    lo, hi = sorted((f1, f2))
    for name in ("cosine", "linear", "wsd"):
        a_lo = lr_schedule(f"{name}:final={lo}", steps=steps, peak_lr=1.0).sum()
        a_hi = lr_schedule(f"{name}:final={hi}", steps=steps, peak_lr=1.0).sum()
        assert a_lo <= a_hi + 1e-9


# ---------------------------------------------------------------------------- LR files


@FAST
@given(schedules())
def test_lr_file_round_trip(tmp_path_factory, case):
    spec, steps, peak, warmup = case
    lr = lr_schedule(spec, steps=steps, peak_lr=peak, warmup_steps=warmup)
    path = tmp_path_factory.mktemp("lr") / "lr.csv"
    write_lr_file(path, lr)
    back = read_lr_file(path)
    np.testing.assert_array_equal(back, lr)
    assert back.dtype == np.float64


def test_write_lr_file_format_and_atomic(tmp_path):
    path = tmp_path / "lr.csv"
    path.write_text("old contents\n")
    write_lr_file(str(path), np.array([0.5, 1.0, 0.25]))
    assert path.read_text() == "step,lr\n1,0.5\n2,1.0\n3,0.25\n"
    assert os.listdir(tmp_path) == ["lr.csv"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("lr", "fragment"),
    [
        (np.array([]), "non-empty 1-D"),
        (np.ones((2, 2)), "non-empty 1-D"),
        (np.array([1.0, np.nan]), "step 2"),
        (np.array([1.0, -1.0]), "step 2"),
        (["a"], "not numeric"),
    ],
)
def test_write_lr_file_errors(tmp_path, lr, fragment):
    path = tmp_path / "lr.csv"
    with pytest.raises(ScheduleError, match=fragment):
        write_lr_file(path, lr)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_write_lr_file_missing_dir(tmp_path):
    with pytest.raises(ScheduleError, match="cannot write LR file"):
        write_lr_file(tmp_path / "nope" / "lr.csv", np.ones(3))


def test_read_lr_file_interpolates(tmp_path):
    path = tmp_path / "lr.csv"
    path.write_text("step,lr,extra\n3,1.0,x\n5,3.0,y\n6,0,z\n\n")
    lr = read_lr_file(path)
    np.testing.assert_array_equal(lr, [1.0, 1.0, 1.0, 2.0, 3.0, 0.0])


def test_read_lr_file_any_column_order_and_spaces(tmp_path):
    path = tmp_path / "lr.csv"
    path.write_text("\ufefflr , step\n 2e-4 , 1 \n1e-4,2.0\n")
    np.testing.assert_array_equal(read_lr_file(path), [2e-4, 1e-4])


def _write(tmp_path, text, name="sched.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("step,learning_rate\n1,0.1\n", ["no column 'lr'", "step, learning_rate"]),
        ("lr\n0.1\n", ["no column 'step'"]),
        ("1,0.1\n2,0.1\n", ["no column", "header"]),
        ("", ["empty"]),
        ("step,lr\n", ["no data rows"]),
        ("step,lr\n1,0.1\n2,abc\n3,0.1\n", ["row 2", "column 'lr'", "'abc'", "not a number"]),
        ("step,lr\n1,0.1\n2,0.1\n3,-0.1\n", ["row 3", "column 'lr'", "negative"]),
        ("step,lr\n1,inf\n", ["row 1", "column 'lr'", "not finite"]),
        ("step,lr\n1,nan\n", ["row 1", "column 'lr'", "not finite"]),
        ("step,lr\n1,0.1\n1.5,0.1\n", ["row 2", "column 'step'", "not an integer"]),
        ("step,lr\n0,0.1\n", ["row 1", "column 'step'", "below 1"]),
        ("step,lr\n1,0.1\n3,0.1\n2,0.1\n", ["row 3", "column 'step'", "does not increase"]),
        ("step,lr\n1,0.1\n1,0.1\n", ["row 2", "column 'step'", "does not increase"]),
        ("step,lr\n1,0.1\n2\n", ["row 2", "fields"]),
    ],
)
def test_read_lr_file_errors(tmp_path, text, fragments):
    path = _write(tmp_path, text)
    with pytest.raises(ScheduleError) as info:
        read_lr_file(path)
    message = str(info.value)
    assert "sched.csv" in message
    for fragment in fragments:
        assert fragment in message


def test_read_lr_file_row_counts_data_rows(tmp_path):
    # blank lines are not data rows; the line number locates the row in the file
    path = _write(tmp_path, "step,lr\n1,0.1\n\n3,bad\n")
    with pytest.raises(ScheduleError, match=r"row 2 \(line 4\), column 'lr'"):
        read_lr_file(path)


def test_read_lr_file_missing(tmp_path):
    with pytest.raises(ScheduleError, match="cannot read LR file .*missing.csv"):
        read_lr_file(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------- steps_for


def test_steps_for_rounds_tokens_over_batch():
    assert steps_for(1e9, 3e5) == 3333  # 3333.33 rounds down
    assert steps_for(1e9, 4e5) == 2500
    assert steps_for(2.5e6, 1e6) == 2  # round half to even, as round() does
    assert steps_for(10.0, 100.0) == 1  # never below the minimum
    assert steps_for(10.0, 100.0, minimum=2) == 2


@pytest.mark.parametrize("tokens, tps", [(0.0, 1e6), (1e9, 0.0), (float("nan"), 1e6), (1e9, float("inf"))])
def test_steps_for_refuses_what_is_no_horizon(tokens, tps):
    with pytest.raises(ScheduleError, match="finite numbers > 0"):
        steps_for(tokens, tps)
