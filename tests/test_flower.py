"""Auditing Flower apps: the server-side taps, the array mapping, and one simulated run of the
example app (3 clients, 2 rounds, Ray backend, offline) attacked and compared with fedleak's own
FedAvg threat model on the same images."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="Flower is an optional extra: pip install 'fedleak[flower]'")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import FedAvg, FedAvgM  # noqa: E402

from fedleak.core.errors import ConfigError  # noqa: E402
from procfs import listening_addresses, loopback  # noqa: E402
from fedleak.threat_models.flower import ClientUpdate, RecordingFitStrategy, RecordingStrategy  # noqa: E402
from fedleak.threat_models.flower_observation import arrays_to_state, observation_from_update  # noqa: E402

NODES = (11, 22, 33)
ITERATIONS = 20
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def task_identity():
    """Flower stamps every new Message with the running task's identity, which only exists inside
    a Flower run; outside one (unit tests) it has to be set, and is put back afterwards."""
    from flwr.supercore.task_identity import TaskIdentity
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


class NodesOnly:
    """The one thing a strategy's configure_train asks of a Grid: which nodes are connected."""

    def get_node_ids(self):
        return list(NODES)


def _arrays(seed: int) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord({"w": Array(rng.normal(size=(3, 2)).astype(np.float32)), "b": Array(rng.normal(size=3).astype(np.float32))})


def _replies(instructions, round):
    replies = []
    for message in instructions:
        message.metadata.__dict__["_message_id"] = f"m{round}-{message.metadata.dst_node_id}"  # the SuperLink's job
        node = message.metadata.dst_node_id
        content = RecordDict({"arrays": _arrays(1000 * round + node),
                              "metrics": MetricRecord({"num-examples": node % 5 + 1, "loss": float(node)})})
        replies.append(Message(content, reply_to=message))
    return replies


def _two_rounds(strategy):
    random.seed(0)  # strategies sample nodes with `random`; the same order sums in the same order
    arrays, sent = _arrays(0), []
    for rnd in (1, 2):
        instructions = list(strategy.configure_train(rnd, arrays, ConfigRecord(), NodesOnly()))
        replies = _replies(instructions, rnd)
        sent.append(arrays)
        arrays, metrics = strategy.aggregate_train(rnd, replies)
    return arrays, metrics, sent


@pytest.mark.parametrize("make", [FedAvg, lambda: FedAvgM(server_momentum=0.9)], ids=["FedAvg", "FedAvgM"])
def test_recording_strategy_aggregates_exactly_as_the_strategy_it_wraps(task_identity, make):
    plain, plain_metrics, _ = _two_rounds(make())
    recorder = RecordingStrategy(make())
    wrapped, wrapped_metrics, globals_sent = _two_rounds(recorder)
    assert list(plain.keys()) == list(wrapped.keys())
    for key in plain.keys():
        assert np.array_equal(plain[key].numpy(), wrapped[key].numpy())
    assert dict(plain_metrics) == dict(wrapped_metrics)

    updates = recorder.updates
    assert sorted((u.round, u.client_id) for u in updates) == [(r, n) for r in (1, 2) for n in NODES]
    for u in updates:
        assert u.num_examples == u.client_id % 5 + 1 and u.partition_id is None
        assert all(np.array_equal(u.sent[k], _arrays(1000 * u.round + u.client_id)[k].numpy()) for k in ("w", "b"))
        assert all(np.array_equal(u.received[k], globals_sent[u.round - 1][k].numpy()) for k in ("w", "b"))


def test_recording_strategy_refuses_a_strategy_with_its_own_loop():
    class OwnLoop(FedAvg):
        def start(self, *args, **kwargs):
            return None
    with pytest.raises(TypeError, match="overrides Strategy.start"):
        RecordingStrategy(OwnLoop())


def test_recording_fit_strategy_aggregates_exactly_as_legacy_fedavg():
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    class Proxy:
        def __init__(self, cid):
            self.cid = cid

    class Manager:
        proxies = [Proxy(str(n)) for n in NODES]

        def num_available(self):
            return len(self.proxies)

        def sample(self, num_clients, min_num_clients=None, criterion=None):
            return self.proxies[:num_clients]

    start = ndarrays_to_parameters([np.zeros((3, 2), np.float32), np.ones(3, np.float32)])

    def one_round(strategy):
        instructions = strategy.configure_fit(1, start, Manager())
        results = [(proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([a.numpy() for a in _arrays(int(proxy.cid)).values()]),
                                  int(proxy.cid) % 5 + 1, {})) for proxy, _ in instructions]
        return parameters_to_ndarrays(strategy.aggregate_fit(1, results, [])[0])

    recorder = RecordingFitStrategy(LegacyFedAvg(min_available_clients=3, min_fit_clients=3))
    for a, b in zip(one_round(LegacyFedAvg(min_available_clients=3, min_fit_clients=3)), one_round(recorder)):
        assert np.array_equal(a, b)
    assert sorted(u.client_id for u in recorder.updates) == sorted(NODES)
    u = recorder.updates[0]
    assert list(u.sent) == ["0", "1"] and np.array_equal(u.received["1"], np.ones(3, np.float32))
    assert u.num_examples == u.client_id % 5 + 1


def test_flower_arrays_map_onto_parameters_by_name_or_order_and_buffers_stay_out(digits):
    from fedleak.models.architectures import build_model
    model = build_model("convnet", 10, digits.shape, width=8)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    params = [n for n, _ in model.named_parameters()]
    assert len(state) > len(params)  # BatchNorm running statistics and counters
    by_name = arrays_to_state(state, model)
    in_state_order = arrays_to_state({str(i): a for i, a in enumerate(state.values())}, model)
    in_param_order = arrays_to_state({str(i): state[n] for i, n in enumerate(params)}, model)
    for n in params:
        assert torch.equal(by_name[n], in_state_order[n]) and torch.equal(by_name[n], in_param_order[n])
    assert by_name["features.bn0.num_batches_tracked"].dtype == torch.long
    with pytest.raises(ConfigError, match="cannot map 3 Flower arrays"):
        arrays_to_state({str(i): a for i, a in enumerate(list(state.values())[:3])}, model)
    shuffled = dict(reversed(list({str(i): a for i, a in enumerate(state.values())}.items())))
    with pytest.raises(ConfigError, match="shape"):
        arrays_to_state({str(i): a for i, a in enumerate(shuffled.values())}, model)

    sent = {k: v + 0.5 if k in params else v + 1 for k, v in state.items()}
    update = ClientUpdate(7, 3, sent, state, num_examples=4)
    obs = observation_from_update(update, model)
    assert (obs.threat_model, obs.kind, obs.client_id, obs.round, obs.num_examples) == ("fedavg", "update", 7, 3, 4)
    assert obs.param_names == params and all(torch.allclose(t, torch.full_like(t, 0.5)) for t in obs.shared)
    assert torch.equal(obs.buffers["features.bn0.running_var"], torch.from_numpy(state["features.bn0.running_var"]))
    gradient = observation_from_update(update, model, shares="gradient")
    assert (gradient.threat_model, gradient.kind) == ("fedsgd", "gradient")
    assert torch.equal(gradient.shared[0], torch.from_numpy(sent[params[0]]))


def test_core_package_and_cli_run_without_flower(tmp_path):
    script = ("import sys; sys.modules['flwr'] = None\n"  # as if Flower were not installed
              "import fedleak.harness.run.runner, fedleak.threat_models, fedleak.attacks, fedleak.defenses, fedleak.harness.flower.audit\n"
              "from fedleak.harness.cli.main import main\n"
              f"sys.exit(main(['audit-flower', '--quiet', '--output', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "pip install 'fedleak[flower]'" in done.stderr


def test_audit_flower_refuses_hyperparameters_it_was_not_told(tmp_path, monkeypatch, capsys):
    from fedleak.harness.cli.main import main
    (tmp_path / "bare_hooks.py").write_text(
        "from fedleak.examples.flower_app.task import build_model, private_data, normalisation\nNUM_CLIENTS = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["audit-flower", "--hooks", "bare_hooks", "--quiet", "--output", str(tmp_path / "out")])
    assert code == 2 and "not told them" in capsys.readouterr().err


# ------------------------------------------------------------------ one simulated run, end to end
@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """The example app, its strategy wrapped in RecordingStrategy, run under the audit (which taps
    the Grid too), so both taps see the same simulated run."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    from fedleak.examples.flower_app import server_app as example, task
    from fedleak.harness.flower.audit import FlowerAudit, run_flower_audit

    recorder = RecordingStrategy(example.make_strategy())
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        recorder.start(grid=grid, initial_arrays=ArrayRecord(task.build_model().state_dict()), num_rounds=task.NUM_ROUNDS)
        recorder.listening = listening_addresses(os.getpid())  # while Flower's Ray instance is up

    out = tmp_path_factory.mktemp("flower-audit")
    result = run_flower_audit(FlowerAudit(server_app=app, iterations=ITERATIONS, output=str(out)))
    return result, recorder


@pytest.mark.slow
def test_both_taps_record_every_client_update_of_the_simulation(audited):
    from fedleak.examples.flower_app import task
    result, recorder = audited
    strategy_updates = recorder.updates
    grid_updates = result.updates
    assert len(grid_updates) == task.NUM_CLIENTS * task.NUM_ROUNDS
    key = lambda u: (u.round, u.client_id)
    for g, s in zip(sorted(grid_updates, key=key), sorted(strategy_updates, key=key)):
        assert key(g) == key(s) and g.num_examples == s.num_examples == task.PRIVATE_BATCH
        assert all(np.array_equal(g.sent[k], s.sent[k]) and np.array_equal(g.received[k], s.received[k]) for k in g.sent)
    state = task.build_model().state_dict()
    for rnd in (1, 2):
        this_round = [u for u in grid_updates if u.round == rnd]
        assert sorted(u.partition_id for u in this_round) == list(range(task.NUM_CLIENTS))
        assert len({u.client_id for u in this_round}) == task.NUM_CLIENTS
        for u in this_round:
            assert list(u.sent) == list(state) and all(u.sent[k].shape == tuple(v.shape) for k, v in state.items())
    # the global weights of round 2 are the example-weighted mean of round 1's replies (FedAvg)
    first = [u for u in grid_updates if u.round == 1]
    for name in ("body.0.weight", "fc.bias"):
        mean = sum(u.num_examples * u.sent[name].astype(np.float64) for u in first) / sum(u.num_examples for u in first)
        for u in grid_updates:
            if u.round == 2:
                np.testing.assert_allclose(u.received[name], mean, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_flowers_ray_instance_listens_on_loopback_only(audited):
    _, recorder = audited
    assert recorder.listening, "found no Ray server sockets during the simulation"
    assert all(loopback(a) for a in recorder.listening), f"Flower's Ray instance listens on {sorted(recorder.listening)}"


@pytest.mark.slow
def test_audit_writes_rows_grid_and_report_per_client(audited):
    from fedleak.examples.flower_app import task
    result, _ = audited
    rows = result.rows
    assert len(rows) == task.NUM_CLIENTS * task.NUM_ROUNDS * task.PRIVATE_BATCH
    assert rows[["psnr", "lpips", "ssim"]].notna().all().all()
    per_client = rows.groupby(["round", "partition_id"])[["psnr", "lpips"]].median()
    assert len(per_client) == task.NUM_CLIENTS * task.NUM_ROUNDS
    assert (rows["threat_model"] == "fedavg").all() and (rows["attack"] == "ig").all()
    for name in ("results.parquet", "results.csv", "grid.png", "report.md", "images.pt"):
        assert (result.directory / name).exists()
    assert "## Per client update" in (result.directory / "report.md").read_text()


@pytest.mark.slow
def test_audit_of_the_first_round_matches_fedleaks_own_fedavg_run(audited, tmp_path):
    """Same images, weights, local training, attack and seed: the Flower client's update is
    fedleak's simulated one, so the attack scores the same."""
    from fedleak.examples.flower_app import task
    from fedleak.harness.run.config import config_from_dict
    from fedleak.harness.run.runner import run_attack
    from fedleak.threat_models.flower_observation import observation_from_update
    result, _ = audited
    config = config_from_dict({
        "data": {"name": task.DATASET, "num_victims": task.NUM_CLIENTS * task.PRIVATE_BATCH, "batch_size": task.PRIVATE_BATCH},
        "victim": {"model": task.MODEL, "seed": task.MODEL_SEED},
        "threat_model": {"name": "fedavg", "knowledge": "informed", "lr": task.LR, "epochs": task.EPOCHS,
                         "local_batch_size": task.LOCAL_BATCH_SIZE},
        "attack": {"name": "ig", "iterations": ITERATIONS, "restarts": 1},
        "seed": 0, "device": "cpu", "output": str(tmp_path)})
    fedleak = run_attack(config)

    audit = result.rows[result.rows["round"] == 1].sort_values(["partition_id", "image_index"])
    assert list(audit["partition_id"]) == list(fedleak.rows["batch"])
    np.testing.assert_allclose(audit["psnr"].to_numpy(), fedleak.rows["psnr"].to_numpy(), atol=0.1)
    np.testing.assert_allclose(audit["lpips"].to_numpy(), fedleak.rows["lpips"].to_numpy(), atol=0.01)

    # and the reason: the Flower client's Δθ is fedleak's FedAvg client update
    from fedleak.threat_models.base import FedAvg as FedAvgThreat
    from fedleak.models.functional import LocalTraining
    model = task.build_model().eval()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    for update in (u for u in result.updates if u.round == 1):
        x, y = task.private_data(update.partition_id, task.NUM_CLIENTS)
        expected = FedAvgThreat(LocalTraining(task.LR, task.EPOCHS, task.LOCAL_BATCH_SIZE)).client_update(
            model, params, {}, task.normalise(x), y, _no_defense())
        # the app trains in float32, so this is a smoke check at float32's summation-order noise; the replay's
        # exactness against torch.optim is checked in float64 (tests/test_local_training.py)
        got = observation_from_update(update, model).shared
        difference = sum(float((g - w).pow(2).sum()) for g, w in zip(got, expected)) ** 0.5
        assert difference < 1e-4 * sum(float(w.pow(2).sum()) for w in expected) ** 0.5


def _no_defense():
    from fedleak.defenses.base import NoDefense
    return NoDefense()


@pytest.mark.slow
def test_audit_rows_are_documented(audited):
    from test_results_schema import documented_columns
    result, _ = audited
    missing = set(result.rows.columns) - documented_columns()
    assert not missing, f"columns not in docs/results.md: {sorted(missing)}"


# ------------------------------------------------------- an app folder written like Flower's quickstart
QUICKSTART = ROOT / "examples" / "flower_quickstart"
QUICKSTART_CONFIG = "num-server-rounds=1 fraction-evaluate=0.0 images-per-client=4 batch-size=2"
QUICKSTART_CLIENTS = 2


def test_app_folder_and_run_config_are_read_as_flwr_run_reads_them(tmp_path):
    from fedleak.harness.flower.app import load_app, parse_run_config
    app = load_app(QUICKSTART, 'batch-size=2 learning-rate=0.05 images-per-client=4')
    assert (app.server_app, app.client_app) == ("digitsapp.server_app:app", "digitsapp.client_app:app")
    assert app.run_config == {"num-server-rounds": 3, "fraction-evaluate": 0.5, "local-epochs": 1, "learning-rate": 0.05,
                              "batch-size": 2, "images-per-client": 4}
    assert app.num_supernodes == 10 and app.hooks is None
    assert parse_run_config(['name="a b" flag=true', "x.y=1"]) == {"name": "a b", "flag": True, "x.y": 1}
    with pytest.raises(ConfigError, match="--run-config: key 'batchsize' is not in .tool.flwr.app.config. of .*known: num-server"):
        load_app(QUICKSTART, "batchsize=2")
    with pytest.raises(ConfigError, match="value must be TOML"):
        parse_run_config("name=two words'")
    with pytest.raises(ConfigError, match="has no pyproject.toml"):
        load_app(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.flwr.app.components]\nserverapp = "a:app"\n')
    with pytest.raises(ConfigError, match="clientapp is missing"):
        load_app(tmp_path)


def test_two_apps_with_modules_of_the_same_name_each_import_their_own(tmp_path, monkeypatch):
    """Two app folders both shipping `fedleak_hooks` and a package `app`: after the first is imported,
    making the second importable hands back the second's modules, as a fresh `flwr run` would."""
    import importlib
    from fedleak.harness.flower.app import load_app
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    for name in ("one", "two"):
        folder = tmp_path / name
        (folder / "app").mkdir(parents=True)
        (folder / "app" / "__init__.py").write_text(f"WHO = {name!r}\n")
        (folder / "fedleak_hooks.py").write_text(f"WHO = {name!r}\n")
        (folder / "pyproject.toml").write_text('[tool.flwr.app.components]\nserverapp = "app:s"\nclientapp = "app:c"\n')
    seen = []
    for name in ("one", "two", "one"):
        load_app(tmp_path / name).make_importable()
        seen.append((importlib.import_module("fedleak_hooks").WHO, importlib.import_module("app").WHO))
    assert seen == [("one", "one"), ("two", "two"), ("one", "one")]


def test_missing_hooks_are_named_one_line_each_before_any_simulation(tmp_path, monkeypatch, capsys):
    from fedleak.harness.cli.main import main
    (tmp_path / "half_hooks.py").write_text("def private_data(partition_id, num_partitions):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["audit-flower", str(QUICKSTART), "--hooks", "half_hooks", "--quiet", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "half_hooks' lacks build_model(): the model architecture" in err and "normalisation(): the per-channel" in err
    code = main(["audit-flower", str(QUICKSTART), "--hooks", "fedleak_hooks", "--run-config", "batchsize=1", "--quiet",
                 "--output", str(tmp_path / "out")])
    assert code == 2 and "key 'batchsize' is not in" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The quickstart-style app audited as a user would, unmodified: its folder, a run config, the
    auditor's hooks next to it; every recorded update saved for the offline audit too."""
    from fedleak.harness.cli.main import main
    base = tmp_path_factory.mktemp("quickstart")
    code = main(["audit-flower", str(QUICKSTART), "--hooks", "fedleak_hooks", "--run-config", QUICKSTART_CONFIG,
                 "--clients", str(QUICKSTART_CLIENTS), "--iterations", str(ITERATIONS // 4), "--save-updates",
                 str(base / "saved"), "--output", str(base / "live"), "--quiet"])
    assert code == 0
    import pandas as pd
    return base, pd.read_parquet(base / "live" / "results.parquet")


@pytest.mark.slow
def test_quickstart_app_is_audited_unmodified_and_every_clients_images_are_scored(quickstart):
    base, rows = quickstart
    # the run config reached the ServerApp (one round, not 3) and the ClientApps (4 images in batches of 2, not 64 in 32)
    assert sorted(set(rows["round"])) == [1]
    assert sorted(rows.groupby("partition_id")["image_index"].count().items()) == [(p, 4) for p in range(QUICKSTART_CLIENTS)]
    assert rows[["psnr", "ssim", "lpips"]].notna().all().all()
    from digitsapp.task import partition
    for p, group in rows.groupby("partition_id"):
        assert sorted(group["true_label"]) == sorted(partition(p, QUICKSTART_CLIENTS, 4)[1].tolist())
    told = json.loads(rows["local_training"].iloc[0])
    assert (told["momentum"], told["shuffle"], told["batch_size"], told["lr"]) == (0.9, True, 2, 0.1)
    # whether fedleak's replay (momentum told, stored order) is exact for each client: a measured yes or no
    assert rows["replay_exact"].map(type).eq(bool).all() and rows["replay_error"].ge(0).all()
    report = (base / "live" / "report.md").read_text()
    assert "digitsapp.server_app:app" in report and "replay exact" in report


@pytest.mark.slow
def test_saved_updates_audited_offline_equal_the_live_audit(quickstart, tmp_path):
    from fedleak.harness.cli.main import main
    from fedleak.threat_models.update_files import load_updates
    base, live = quickstart
    saved = load_updates(base / "saved")
    assert len(saved) == QUICKSTART_CLIENTS and len(list((base / "saved" / "globals").iterdir())) == 1  # one global, shared
    assert {u.partition_id for u in saved} == set(range(QUICKSTART_CLIENTS)) and all(u.num_examples == 4 for u in saved)
    code = main(["audit-updates", str(base / "saved"), "--app", str(QUICKSTART), "--run-config", QUICKSTART_CONFIG,
                 "--hooks", "fedleak_hooks", "--iterations", str(ITERATIONS // 4), "--output", str(tmp_path), "--quiet"])
    assert code == 0
    import pandas as pd
    offline = pd.read_parquet(tmp_path / "results.parquet")
    key = ["round", "partition_id", "image_index"]
    live, offline = live.sort_values(key).reset_index(drop=True), offline.sort_values(key).reset_index(drop=True)
    for column in ("psnr", "ssim", "lpips", "gradient_loss", "replay_error", "predicted_label"):
        assert live[column].tolist() == offline[column].tolist(), column


@pytest.mark.slow
def test_saved_updates_without_ground_truth_give_reconstructions_and_losses_only(quickstart, tmp_path, capsys):
    from fedleak.harness.cli.main import main
    base, _ = quickstart
    code = main(["audit-updates", str(base / "saved"), "--model", "digitsapp.task:Net", "--mean", "0.5", "--std", "0.5",
                 "--image-shape", "1,28,28", "--lr", "0.1", "--local-batch-size", "2", "--momentum", "0.9", "--shuffle",
                 "--iterations", "3", "--output", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    import pandas as pd
    rows = pd.read_parquet(tmp_path / "results.parquet")
    assert len(rows) == 4 * QUICKSTART_CLIENTS and rows["psnr"].isna().all() and rows["gradient_loss"].notna().all()
    assert json.loads(rows["knowledge"].iloc[0])["labels"] is False  # parameter_aware: labels inferred, not known
    report = (tmp_path / "report.md").read_text()
    assert "No ground truth" in report and "PSNR" not in report and (tmp_path / "grid.png").exists()
    assert main(["audit-updates", str(base / "saved"), "--model", "digitsapp.task:Net", "--mean", "0.5", "--std", "0.5",
                 "--image-shape", "1,28,28", "--lr", "0.1", "--knowledge", "informed", "--output", str(tmp_path)]) == 2
    assert "no ground truth" in capsys.readouterr().err


def test_saved_update_files_hold_numbers_and_metadata_and_nothing_else(tmp_path):
    from fedleak.core.errors import DataError
    from fedleak.threat_models.update_files import load_updates, save_update
    sent = {"w": np.arange(6, dtype=np.float32).reshape(3, 2), "n": np.array(3, dtype=np.int64)}
    received = {"w": np.zeros((3, 2), np.float32), "n": np.array(0, dtype=np.int64)}
    for node in (5, 7):
        save_update(ClientUpdate(node, 2, sent, received, 4, {"loss": 0.5}, partition_id=node - 5, num_partitions=2), tmp_path)
    (update, other) = load_updates(tmp_path)
    assert (update.client_id, update.round, update.num_examples, update.partition_id, update.num_partitions) == (5, 2, 4, 0, 2)
    assert list(update.sent) == ["w", "n"] and np.array_equal(update.sent["w"], sent["w"]) and update.metrics == {"loss": 0.5}
    assert len(list((tmp_path / "globals").iterdir())) == 1 and other.client_id == 7
    with np.load(next((tmp_path / "updates").iterdir()), allow_pickle=False) as npz:  # nothing that needs pickle
        assert sorted(npz.files) == ["0", "1", "metadata"]
    target = next((tmp_path / "updates").iterdir())
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read saved update"):
        load_updates(tmp_path)


def test_recording_strategy_can_save_every_update_instead_of_keeping_it(task_identity, tmp_path):
    from fedleak.threat_models.update_files import load_updates
    recorder = RecordingStrategy(FedAvg(), save_to=tmp_path)
    _two_rounds(recorder)
    assert recorder.updates is None  # nothing held in memory
    saved = load_updates(tmp_path)
    assert sorted((u.round, u.client_id) for u in saved) == [(r, n) for r in (1, 2) for n in NODES]
    assert all(np.array_equal(u.sent["w"], _arrays(1000 * u.round + u.client_id)["w"].numpy()) for u in saved)


# ------------------------------------------------------- an app as `flwr new` makes it
FLWR_NEW = ROOT / "examples" / "flwr_new_pytorch"


@pytest.mark.slow
def test_an_app_as_flwr_new_makes_it_is_audited_from_its_own_folder_with_the_ladder(tmp_path, monkeypatch):
    """examples/flwr_new_pytorch: the PyTorch app of `flwr new` (flwr 1.24 template: CIFAR-style Net, Adam, FedAvg
    with fraction-train 0.5, run config in pyproject), copied unmodified and audited from its folder; its CIFAR
    download is served offline by the hooks' flwr_datasets stand-in (32x32 photo crops)."""
    import shutil
    import pandas as pd
    from fedleak.harness.cli.main import main
    app = tmp_path / "app"
    shutil.copytree(FLWR_NEW, app, ignore=shutil.ignore_patterns("__pycache__", "final_model.pt"))
    monkeypatch.chdir(app)  # the template's ServerApp saves final_model.pt in the working folder
    code = main(["audit-flower", ".", "--hooks", "fedleak_hooks", "--run-config", "num-server-rounds=1",
                 "--clients", "4", "--iterations", "1", "--ladder", "--quiet", "--output", str(tmp_path / "out")])
    assert code == 0
    rows = pd.read_parquet(tmp_path / "out" / "results.parquet")
    # fraction-train 0.5 of 4 nodes: 2 clients, each the 4 training images of its 80/20 split
    assert rows["partition_id"].nunique() == 2 and rows.groupby("partition_id").size().eq(4).all()
    told = json.loads(rows["local_training"].iloc[0])
    assert (told["optimizer"], told["lr"], told["batch_size"]) == ("adam", 0.01, 32)
    assert rows["replay_exact"].all()  # one Adam step on the whole partition: the replay is the client's update
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert "| 1 | 1 image, 1 step | 8 |" in table and "| 2 | the app: 4 images, 1 step | 8 |" in table
    for name in ("task.py", "client_app.py", "server_app.py"):
        assert (app / "myapp" / name).read_bytes() == (FLWR_NEW / "myapp" / name).read_bytes()
