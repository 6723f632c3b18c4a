"""utils: metrics against hand-computed cases and sklearn, the restricted unpickler, atomic writes, SIGTERM as
Ctrl-C, Ray started once with the repository on its workers' path."""
import json
import os
import pickle
import random
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

import utils

NAMES = ["hap", "sad", "neu", "ang", "exc", "fru"]


def test_accuracy_and_weighted_f1_by_hand():
    labels, preds = [0, 0, 1, 1], [0, 1, 1, 1]
    assert utils.accuracy(labels, preds) == pytest.approx(75.0)
    # class 0: P 1, R 1/2, F1 2/3; class 1: P 2/3, R 1, F1 4/5; two of each in support
    assert utils.weighted_f1(labels, preds) == pytest.approx((2 / 3 + 4 / 5) / 2 * 100)


def test_weighted_f1_matches_sklearn_with_a_class_never_predicted():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 300)
    preds = np.where(rng.random(300) < 0.5, labels, rng.integers(0, 5, 300))  # class 5 predicted rarely
    preds[preds == 5] = 4
    assert utils.weighted_f1(labels, preds) == pytest.approx(
        f1_score(labels, preds, average="weighted", zero_division=0) * 100)
    assert utils.accuracy(labels, preds) == pytest.approx(np.mean(labels == preds) * 100)


def test_classification_report_lists_every_class_with_four_digits():
    text = utils.classification_report_text([0, 0, 1, 1], [0, 1, 1, 1], NAMES)
    for name in NAMES:
        assert name in text
    assert "0.6667" in text and "0.8000" in text


def test_confusion_matrix_counts_rows_true_columns_predicted():
    matrix = utils.confusion([0, 0, 1, 2], [0, 2, 1, 2], 4)
    expected = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(matrix, expected)


def test_report_block_has_scores_report_and_matrix():
    labels, preds = [0, 0, 1, 1, 5], [0, 1, 1, 1, 5]
    block = utils.report_block("test at the best-validation epoch", labels, preds, NAMES)
    assert block.startswith("== test at the best-validation epoch ==")
    assert f"accuracy: {utils.accuracy(labels, preds):.2f}" in block
    assert f"weighted F1: {utils.weighted_f1(labels, preds):.2f}" in block
    assert utils.classification_report_text(labels, preds, NAMES).strip() in block
    matrix_lines = block.rstrip("\n").splitlines()[-7:]
    assert matrix_lines[0].split() == NAMES
    assert matrix_lines[1].split() == ["hap", "1", "1", "0", "0", "0", "0"]
    assert matrix_lines[6].split() == ["fru", "0", "0", "0", "0", "0", "1"]


def test_turn_kinds_per_speaker_and_dialogue():
    dialogue = [7, 7, 7, 7, 7, 7, 8, 8, 8]
    speakers = [0, 1, 0, 0, 1, 1, 0, 0, 1]
    labels = [2, 2, 2, 3, 4, 4, 3, 3, 4]
    # speaker 0 in dialogue 7: 2 (first), 2 (same), 3 (changed); speaker 1: 2 (first), 4 (changed), 4 (same);
    # dialogue 8 starts afresh although speaker 0 said 3 last in dialogue 7.
    expected = list('ffissi' 'fif')
    assert utils.turn_kinds(labels, speakers, dialogue).tolist() == expected
    assert utils.turn_kinds(np.array(labels), np.array(speakers), np.array(dialogue)).tolist() == expected


def test_sentiment3_from_bins():
    np.testing.assert_array_equal(utils.sentiment3_from_bins(range(7)), [0, 0, 0, 1, 2, 2, 2])


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()
    utils.seed_everything(5)
    first = draw()
    utils.seed_everything(5)
    assert draw() == first
    utils.seed_everything(6)
    assert draw() != first


def test_run_cli_turns_user_error_into_exit_2(capsys):
    def main(argv):
        raise utils.UserError("features.pkl: dialogue 3 has no labels")
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(main, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: features.pkl: dialogue 3 has no labels\n"


# ----------------------------------------------------------------------------- safe reading

def test_safe_load_pickle_reads_numpy_arrays_and_containers(tmp_path):
    data = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": [np.float32(1.5), {1, 2}], 3: ("x", None)}
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = utils.safe_load_pickle(path)
        np.testing.assert_array_equal(loaded["a"], data["a"])
        assert loaded["b"] == [1.5, {1, 2}] and loaded[3] == ("x", None)


class RunsACommand:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_safe_load_pickle_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps([np.zeros(2), RunsACommand()]))
    with pytest.raises(utils.UserError, match="evil.pkl.*system"):
        utils.safe_load_pickle(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()


def test_safe_load_pickle_broken_or_missing_file_is_a_user_error(tmp_path):
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(np.zeros(100))[:50])
    with pytest.raises(utils.UserError, match="cut.pkl"):
        utils.safe_load_pickle(tmp_path / "cut.pkl")
    with pytest.raises(utils.UserError, match="absent.pkl"):
        utils.safe_load_pickle(tmp_path / "absent.pkl")


# ----------------------------------------------------------------------------- safe writing

def test_atomic_write_creates_parent_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "report.txt"
    utils.save_text(path, "first\n")
    utils.save_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert os.listdir(path.parent) == ["report.txt"]


def test_failed_writer_leaves_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "best_model_IEMOCAP.pth"
    path.write_bytes(b"old checkpoint")

    def half_then_crash(f):
        f.write(b"half a new checkpoint")
        raise KeyboardInterrupt  # Ctrl-C in the middle of a save
    with pytest.raises(KeyboardInterrupt):
        utils.atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old checkpoint"
    assert os.listdir(tmp_path) == ["best_model_IEMOCAP.pth"]


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        utils.save_text(tmp_path / "config.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644


def test_save_pickle_json_csv_and_state_dict_round_trip(tmp_path):
    utils.save_pickle(tmp_path / "labels.pkl", np.array([3, 1, 2]))
    np.testing.assert_array_equal(utils.safe_load_pickle(tmp_path / "labels.pkl"), [3, 1, 2])

    utils.save_json(tmp_path / "config.json", {"lr": np.float32(0.5), "dims": np.array([1, 2]), "name": "é"})
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8")) == \
        {"lr": 0.5, "dims": [1, 2], "name": "é"}

    frame = pd.DataFrame({"dialogue_id": [0, 0], "label": [2, 5], "pred": [2, 4]})
    utils.save_csv(tmp_path / "utterances.csv", frame)
    assert (tmp_path / "utterances.csv").read_text() == "dialogue_id,label,pred\n0,2,2\n0,5,4\n"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "utterances.csv"), frame)

    state = {"smax_fc.weight": torch.randn(6, 4), "smax_fc.bias": torch.zeros(6)}
    utils.save_state_dict(tmp_path / "model.pth", state)
    loaded = torch.load(tmp_path / "model.pth", weights_only=True)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_sigterm_raises_keyboard_interrupt_with_its_status_and_the_handler_is_given_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with utils.SigtermAsInterrupt() as interrupt:
            assert interrupt.status == 130                  # Ctrl-C's, until a SIGTERM comes
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)                                  # interrupted at once
    assert interrupt.status == 128 + signal.SIGTERM == 143
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_ray_starts_once_with_the_repository_and_the_given_variables_on_its_workers(tmp_path, monkeypatch):
    import ray
    monkeypatch.chdir(tmp_path)                         # the workers find the modules by PYTHONPATH, not the cwd
    assert not ray.is_initialized()
    try:
        utils.start_ray('local', {'MOED_PROBE': 'seen'}, num_cpus=1)
        assert ray.cluster_resources()['CPU'] == 1 and utils.start_ray('local') == 0.0

        @ray.remote
        def probe():
            import utils as worker_utils
            return os.environ.get('MOED_PROBE'), worker_utils.REPO, os.environ.get('RAY_USAGE_STATS_ENABLED')
        assert ray.get(probe.remote()) == ('seen', utils.REPO, '0')
    finally:
        ray.shutdown()
