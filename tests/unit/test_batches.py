import pytest

from saltcd.config.batches import BatchSpecError, plan_batches

MINIONS = ["m3", "m1", "m2", "m5", "m4"]


@pytest.mark.parametrize("spec, sizes", [
    (1, [1, 1, 1, 1, 1]),
    (2, [2, 2, 1]),
    ("2", [2, 2, 1]),
    (10, [5]),
    ("50%", [3, 2]),      # 2.5 rounds up
    ("34%", [2, 2, 1]),   # 1.7 rounds up
    ("1%", [1, 1, 1, 1, 1]),
    ("100%", [5]),
    ([1, "50%"], [1, 3, 1]),
    ([1, "25%", "100%"], [1, 2, 2]),
])
def test_batch_sizes(spec, sizes):
    batches = plan_batches(MINIONS, spec)
    assert [len(b) for b in batches] == sizes
    assert [m for b in batches for m in b] == sorted(MINIONS)


def test_no_minions_no_batches():
    assert plan_batches([], 2) == []


@pytest.mark.parametrize("spec", [0, -1, "0%", "101%", "abc", [], [1, 0], True, 1.5, None])
def test_invalid_specs(spec):
    with pytest.raises(BatchSpecError):
        plan_batches(MINIONS, spec)
