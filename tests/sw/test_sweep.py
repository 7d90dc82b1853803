"""sw.sweep: the local pool and a Dask distributed LocalCluster give the same results, in the items' order."""

import numpy as np
import pytest

from sw.apps.explore import evaluate_cycles
from sw.sweep import ClusterUnavailable, run_sweep


def _square_plus(item):
    x, y = item
    return {"item": [x, y], "value": x * x + y}


ITEMS = [(i, 7 - i) for i in range(7)]


def test_local_pool_keeps_order_and_reports_progress():
    seen = []
    out = run_sweep(_square_plus, ITEMS, workers=2, progress=lambda done, total, r: seen.append((done, total)))
    assert out == [_square_plus(i) for i in ITEMS]
    assert sorted(seen) == [(d, len(ITEMS)) for d in range(1, len(ITEMS) + 1)]
    assert run_sweep(_square_plus, ITEMS, workers=1) == out


@pytest.fixture(scope="module")
def local_cluster():
    from distributed import Client, LocalCluster
    # In-process workers (inproc:// transport): nothing listens on a network port.
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_local_cluster_equals_local_run(local_cluster):
    assert run_sweep(_square_plus, ITEMS, cluster=local_cluster) == run_sweep(_square_plus, ITEMS, workers=1)


def test_cycle_sweep_on_local_cluster_equals_local(local_cluster, tiny_model_path):
    """A small sweep of the exact cycle model (three configurations of a tiny network) on the cluster."""
    jobs = [(str(tiny_model_path), dict(rows=r, cols=c, act_depth=2048, wgt_depth=2048, acc_depth=512,
                                        param_depth=64, bus_bytes=8), (1, 2)) for r, c in ((2, 2), (2, 4), (4, 4))]
    local = run_sweep(evaluate_cycles, jobs, workers=2)
    assert run_sweep(evaluate_cycles, jobs, cluster=local_cluster) == local
    assert all(sum(r["batches"]["2"].values()) > 0 for r in local)


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ClusterUnavailable, match="cannot reach the Dask scheduler"):
        run_sweep(_square_plus, ITEMS, cluster="tcp://127.0.0.1:9")


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    from sw.model_io import save_quantized
    from sw.quantize import quantize
    from sw.testing import random_images, random_network, random_params
    rng = np.random.default_rng(4242)
    net = random_network(rng, input_shape=(6, 6, 1), conv_layers=1, dense_layers=1, channels=(3,))
    qnet = quantize(net, random_params(rng, net), random_images(rng, net, 8))
    path = tmp_path_factory.mktemp("m") / "tiny.npz"
    save_quantized(path, qnet)
    return path
