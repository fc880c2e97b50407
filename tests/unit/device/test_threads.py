"""Thread counts fit the CPUs the process may use: affinity, cgroup v2 quota, profile as an upper bound."""
from __future__ import annotations

import os
import subprocess
import sys

from pathlib import Path

import pytest

from edge_aigc import Runtime
from edge_aigc.device.profiles import DYNAMIC_BLOCK_BASE, get_profile
from edge_aigc.device.system import CpuBudget, fit_threads, usable_cpus
from edge_aigc.zoo import zoo_bundle


def fake_cgroup(tmp_path, levels: dict[str, str]):
    """A cgroup v2 tree under tmp_path: {relative dir: cpu.max contents}; the process sits in the deepest."""
    root = tmp_path / "cgroup"
    for rel, cpu_max in levels.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(cpu_max + "\n")
    deepest = max(levels, key=len)
    proc = tmp_path / "self-cgroup"
    proc.write_text(f"0::/{deepest}\n")
    return root, proc


def test_the_affinity_mask_bounds_the_cpus():
    assert usable_cpus("/nonexistent", "/nonexistent").count == len(os.sched_getaffinity(0))


def test_a_cgroup_quota_below_the_affinity_mask_wins_rounded_down(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs in the affinity mask")
    root, proc = fake_cgroup(tmp_path, {"system.slice": "max 100000", "system.slice/edge.service": "150000 100000"})
    budget = usable_cpus(root, proc)
    assert budget.count == 1 and "cpu.max quota of 1.5" in budget.why


def test_no_quota_leaves_the_affinity_mask(tmp_path):
    root, proc = fake_cgroup(tmp_path, {"x": "max 100000"})
    assert usable_cpus(root, proc).count == len(os.sched_getaffinity(0))


def test_the_tightest_quota_on_the_path_counts(tmp_path):
    root, proc = fake_cgroup(tmp_path, {"a": "50000 100000", "a/b": "max 100000"})
    budget = usable_cpus(root, proc)
    assert budget.count == 1 and "0.5" in budget.why


def test_profile_threads_are_an_upper_bound():
    two = CpuBudget(2, "CPU(s) in its affinity mask")
    assert fit_threads(4, budget=two).threads == 2
    assert "asks for 4" in fit_threads(4, budget=two).reason
    assert fit_threads(1, budget=two).threads == 1
    assert fit_threads(None, budget=two).threads == 2
    assert fit_threads(4, requested=8, budget=two).threads == 2  # --threads is capped too
    assert fit_threads(4, requested=1, budget=two).threads == 1


def test_a_4_thread_profile_runs_with_no_more_threads_than_usable_cpus():
    path = zoo_bundle("fortune-gpt", "x86-avx2").path   # x86-avx2 asks for 4 threads
    with Runtime([path], profile="x86-avx2") as rt:
        info = rt.info("fortune-gpt")
    assert info["threads"] == min(4, usable_cpus().count)


def _block_base(rt: Runtime, name: str) -> str | None:
    options = rt.model(name).session.native().get_session_options()
    try:
        return options.get_session_config_entry("session.dynamic_block_base")
    except RuntimeError:  # ONNX Runtime's answer for a key that was never set
        return None


@pytest.mark.skipif(usable_cpus().count < 2, reason="one thread has no loop to split")
def test_a_profile_may_hand_out_parallel_loops_in_shrinking_blocks(tmp_path):
    path = zoo_bundle("digits", "x86-avx2").path
    with Runtime([path], profile="x86-avx2") as rt:  # the default: ONNX Runtime's static split
        assert DYNAMIC_BLOCK_BASE == 0 and _block_base(rt, "digits") is None
    text = Path(get_profile("x86-avx2").path).read_text().replace("threads = 4\n", "threads = 4\ndynamic_block_base = 4\n", 1)
    (tmp_path / "x86-avx2.toml").write_text(text)
    with Runtime([path], profile=str(tmp_path / "x86-avx2.toml")) as rt:
        assert rt.profile.onnx.dynamic_block_base == 4
        assert _block_base(rt, "digits") == "4"


def test_a_process_pinned_to_one_cpu_runs_one_thread():
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]});"
            "from edge_aigc import Runtime; from edge_aigc.zoo import zoo_bundle;"
            "rt = Runtime([zoo_bundle('digits', 'x86-avx2').path], profile='x86-avx2');"
            "print(rt.info('digits')['threads'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "1"
