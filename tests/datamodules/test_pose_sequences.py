import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.keypoints import KEYPOINT_NAMES, MISSING, save_keypoints_txt, to_txt_frame
from datamodules.pose_sequences import (
    BODY25_TO_COCO18,
    PoseSequence,
    fill_missing,
    load_pose_sequence,
    smooth,
)


def _coco_points(shift: float = 0.0) -> np.ndarray:
    """Distinct pixel keypoints ``(18, 2)``: joint j at (10 + 3 j + shift, 20 + 5 j)."""
    joints = np.arange(18, dtype=np.float64)
    return np.stack([10 + 3 * joints + shift, 20 + 5 * joints], axis=1)


def _flat(points: np.ndarray, confidence) -> list[float]:
    confidence = np.broadcast_to(np.asarray(confidence, dtype=np.float64), (points.shape[0],))
    return np.concatenate([points, confidence[:, None]], axis=1).ravel().tolist()


def _write_json(path: Path, people: list[list[float] | None], **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": p} for p in people], **extra}))


def _sequence(keypoints: np.ndarray, frame_size=(100, 80)) -> PoseSequence:
    visible = keypoints[..., 0] != MISSING
    return PoseSequence(keypoints, visible.astype(float), tuple(f"f{i}" for i in range(len(keypoints))), frame_size)


def test_body25_folder_maps_to_coco18_order(tmp_path):
    body25 = np.stack([np.arange(25) * 2.0 + 5, np.arange(25) * 4.0 + 7], axis=1)  # joint k at (5 + 2k, 7 + 4k)
    _write_json(tmp_path / "f0.json", [_flat(body25, 0.9)])
    seq = load_pose_sequence(tmp_path, frame_size=(200, 100))
    assert seq.keypoints.shape == (1, 18, 2) and seq.frame_size == (200, 100) and seq.names == ("f0",)
    r_hip = KEYPOINT_NAMES.index("r_hip")
    assert r_hip == 8 and BODY25_TO_COCO18[r_hip] == 9
    np.testing.assert_array_equal(seq.keypoints[0, r_hip], [5 + 2 * 9, 7 + 4 * 9])  # BODY_25 RHip, not MidHip
    np.testing.assert_array_equal(seq.keypoints[0, KEYPOINT_NAMES.index("l_ear")], [5 + 2 * 18, 7 + 4 * 18])
    np.testing.assert_array_equal(seq.keypoints[0, 1], [7, 11])  # neck stays 1
    np.testing.assert_allclose(seq.confidence, 0.9)


def test_coco18_folder_keeps_order_and_picks_highest_total_confidence(tmp_path):
    faint = _flat(_coco_points(shift=100), 0.3)
    strong = _flat(_coco_points(), 0.8)
    partial = _flat(_coco_points(shift=50), [1.0] * 5 + [0.0] * 13)  # mean 1.0 over detected, total only 5
    _write_json(tmp_path / "a.json", [faint, partial, strong, None])
    seq = load_pose_sequence(tmp_path, frame_size=(300, 200))
    np.testing.assert_array_equal(seq.keypoints[0], _coco_points())


def test_low_confidence_joints_are_missing(tmp_path):
    scores = np.full(18, 0.9)
    scores[3], scores[4] = 0.05, 0.0
    _write_json(tmp_path / "a.json", [_flat(_coco_points(), scores)])
    seq = load_pose_sequence(tmp_path, frame_size=(300, 200), min_confidence=0.1)
    assert (seq.keypoints[0, 3:5] == MISSING).all() and (seq.confidence[0, 3:5] == 0).all()
    assert (seq.keypoints[0, 5] != MISSING).all() and seq.confidence[0, 5] == pytest.approx(0.9)
    lenient = load_pose_sequence(tmp_path, frame_size=(300, 200), min_confidence=0.01)
    assert lenient.visible[0, 3] and not lenient.visible[0, 4]


def test_empty_frame_warns_and_is_all_missing(tmp_path):
    _write_json(tmp_path / "frame_0.json", [_flat(_coco_points(), 1.0)])
    _write_json(tmp_path / "frame_1.json", [])
    with pytest.warns(UserWarning, match=r"frame_1\.json"):
        seq = load_pose_sequence(tmp_path, frame_size=(300, 200))
    assert len(seq) == 2 and (seq.keypoints[1] == MISSING).all() and (seq.confidence[1] == 0).all()
    assert seq.visible[0].all()


def test_frames_in_natural_order(tmp_path):
    for index in (10, 2, 1):
        _write_json(tmp_path / f"frame_{index}.json", [_flat(_coco_points(shift=index), 1.0)])
    (tmp_path / "frame_1_rendered.png").write_bytes(b"not a pose")  # other files are ignored
    seq = load_pose_sequence(tmp_path, frame_size=(300, 200))
    assert seq.names == ("frame_1", "frame_2", "frame_10")
    np.testing.assert_array_equal(seq.keypoints[:, 0, 0], [11, 12, 20])


def test_canvas_size_and_normalised_coordinates(tmp_path):
    pixels = _coco_points()
    normalised = pixels / (200.0, 300.0)  # x / width, y / height
    normalised[2] = 0.0  # an absent joint as controlnet-aux writes it: (0, 0, 0)
    scores = np.ones(18)
    scores[2] = 0.0
    _write_json(tmp_path / "0.json", [_flat(normalised, scores)], canvas_height=300, canvas_width=200)
    seq = load_pose_sequence(tmp_path)
    assert seq.frame_size == (300, 200)
    expected = pixels.copy()
    expected[2] = MISSING
    np.testing.assert_allclose(seq.keypoints[0], expected)


def test_pixel_coordinates_are_not_rescaled_when_one_frame_looks_normalised(tmp_path):
    tiny = np.full((18, 2), 0.5)
    _write_json(tmp_path / "0.json", [_flat(tiny, [1.0] + [0.0] * 17)])
    _write_json(tmp_path / "1.json", [_flat(_coco_points(), 1.0)])
    seq = load_pose_sequence(tmp_path, frame_size=(300, 200))
    np.testing.assert_array_equal(seq.keypoints[0, 0], [0.5, 0.5])
    np.testing.assert_array_equal(seq.keypoints[1], _coco_points())


def test_missing_frame_size_error_names_the_option(tmp_path):
    _write_json(tmp_path / "0.json", [_flat(_coco_points(), 1.0)])
    with pytest.raises(ValueError, match=r"pass frame_size \(--pose_frame_size\)"):
        load_pose_sequence(tmp_path)


def test_frame_size_contradicting_the_canvas_is_an_error(tmp_path):
    _write_json(tmp_path / "0.json", [_flat(_coco_points(), 1.0)], canvas_height=300, canvas_width=200)
    with pytest.raises(ValueError, match="contradicts"):
        load_pose_sequence(tmp_path, frame_size=(200, 300))


def test_wrong_keypoint_count_names_file_and_count(tmp_path):
    _write_json(tmp_path / "0.json", [_flat(_coco_points(), 1.0)])
    _write_json(tmp_path / "bad_frame.json", [[1.0] * 51])
    with pytest.raises(ValueError, match=r"bad_frame\.json.*51"):
        load_pose_sequence(tmp_path, frame_size=(300, 200))


def test_bad_paths_are_named(tmp_path):
    mixed = tmp_path / "mixed"
    _write_json(mixed / "0.json", [_flat(_coco_points(), 1.0)])
    save_keypoints_txt(mixed / "1.txt", to_txt_frame(_coco_points(), (256, 176)))
    with pytest.raises(ValueError, match=r"mixed.*mixes"):
        load_pose_sequence(mixed)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.*no pose files"):
        load_pose_sequence(empty)
    single = tmp_path / "pose.npy"
    np.save(single, np.zeros((18, 2)))
    with pytest.raises(ValueError, match=r"pose\.npy"):
        load_pose_sequence(single)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError, match=r"x\.json.*OpenPose"):
        load_pose_sequence(tmp_path / "other", frame_size=(10, 10))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pose_sequence(tmp_path / "nowhere")


def test_txt_folder_round_trip(tmp_path):
    size = (256, 176)
    frames = [_coco_points(shift=shift) for shift in (0, 4, 8)]
    frames[1][6] = MISSING
    for index, points in enumerate(frames):
        save_keypoints_txt(tmp_path / f"pose_{index}.txt", to_txt_frame(points, size))
    seq = load_pose_sequence(tmp_path)
    assert seq.frame_size == size and seq.names == ("pose_0", "pose_1", "pose_2")
    np.testing.assert_allclose(seq.keypoints, np.stack(frames), atol=1e-5)
    assert not seq.visible[1, 6] and seq.confidence[1, 6] == 0 and seq.confidence[0, 6] == 1
    with pytest.raises(ValueError, match="fixed frame"):
        load_pose_sequence(tmp_path, frame_size=(512, 352))


def test_csv_rows_in_file_order(tmp_path):
    rows = ["name:keypoints_y:keypoints_x"]
    frames = {"b_10.jpg": _coco_points(shift=1), "b_2.jpg": _coco_points(shift=2)}
    frames["b_2.jpg"][0] = MISSING
    for name, points in frames.items():
        rows.append(f"{name}:{json.dumps(points[:, 1].astype(int).tolist())}:"
                    f"{json.dumps(points[:, 0].astype(int).tolist())}")
    path = tmp_path / "seq.csv"
    path.write_text("\n".join(rows) + "\n")
    seq = load_pose_sequence(path)
    assert seq.names == ("b_10.jpg", "b_2.jpg") and seq.frame_size == (256, 176)
    np.testing.assert_array_equal(seq.keypoints, np.stack(list(frames.values())))
    assert seq.confidence[1, 0] == 0 and seq.confidence[0, 0] == 1
    assert load_pose_sequence(path, frame_size=(128, 64)).frame_size == (128, 64)
    path.write_text("\n".join(rows + rows[1:2]) + "\n")
    with pytest.raises(ValueError, match=r"seq\.csv.*b_10\.jpg"):
        load_pose_sequence(path)


def test_fill_missing_interpolates_and_respects_max_gap():
    keypoints = np.full((8, 18, 2), MISSING)
    keypoints[0, 0] = [0, 0]
    keypoints[3, 0] = [30, 60]  # frames 1-2: a gap of 2
    keypoints[7, 0] = [70, 60]  # frames 4-6: a gap of 3
    keypoints[2, 1] = [5, 5]  # joint 1 visible once: carried to both ends
    sequence = _sequence(keypoints)
    filled = fill_missing(sequence)
    np.testing.assert_allclose(filled.keypoints[:, 0, 0], [0, 10, 20, 30, 40, 50, 60, 70])
    np.testing.assert_allclose(filled.keypoints[:, 0, 1], [0, 20, 40, 60, 60, 60, 60, 60])
    np.testing.assert_allclose(filled.keypoints[:, 1], np.full((8, 2), 5.0))
    assert (filled.keypoints[:, 2] == MISSING).all()  # never visible
    assert filled.confidence[1, 0] == 0 and filled.confidence[3, 0] == 1 and filled.visible[1, 0]
    limited = fill_missing(sequence, max_gap=2)
    assert limited.visible[1:3, 0].all() and not limited.visible[4:7, 0].any()
    assert limited.visible[:2, 1].all() and not limited.visible[3:, 1].any()  # leading gap 2, trailing gap 5
    assert not fill_missing(sequence, max_gap=0).visible[1, 0]


def test_smooth_removes_jitter_and_keeps_missing():
    rng = np.random.default_rng(0)
    frames = np.arange(80, dtype=np.float64)
    truth = np.zeros((80, 18, 2))
    truth[..., 0] = 20 + 0.5 * frames[:, None]
    truth[..., 1] = 40 + 0.25 * frames[:, None]
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    noisy[30:34, 5] = MISSING
    sequence = _sequence(noisy)
    smoothed = smooth(sequence, sigma=3.0)
    assert (smoothed.keypoints[30:34, 5] == MISSING).all() and smoothed.visible.sum() == sequence.visible.sum()
    visible = sequence.visible
    raw_error = np.abs(noisy - truth)[visible].mean()
    smooth_error = np.abs(smoothed.keypoints - truth)[visible].mean()
    interior = np.abs(smoothed.keypoints - truth)[10:70][visible[10:70]].mean()
    assert smooth_error < 0.5 * raw_error and interior < 0.4 * raw_error
    assert np.abs(smoothed.keypoints[28:36, 5][smoothed.visible[28:36, 5]] - truth[28:36, 5].mean(0)).max() < 10
    assert smooth(sequence, 0) is sequence


def test_resized_maps_coordinates_and_keeps_missing():
    keypoints = np.stack([_coco_points(), _coco_points(shift=2)])
    keypoints[1, 4] = MISSING
    resized = _sequence(keypoints, frame_size=(100, 80)).resized((200, 40))
    assert resized.frame_size == (200, 40)
    np.testing.assert_allclose(resized.keypoints[0, 3], [(10 + 9) / 2, (20 + 15) * 2])
    assert (resized.keypoints[1, 4] == MISSING).all() and resized.confidence[1, 4] == 0


def test_pose_sequence_validates_shapes():
    keypoints = np.zeros((2, 18, 2))
    with pytest.raises(ValueError, match=r"\(T, 18, 2\)"):
        PoseSequence(np.zeros((2, 17, 2)), np.zeros((2, 17)), ("a", "b"), (10, 10))
    with pytest.raises(ValueError, match="confidence must have shape"):
        PoseSequence(keypoints, np.zeros((2, 17)), ("a", "b"), (10, 10))
    with pytest.raises(ValueError, match="one name per frame"):
        PoseSequence(keypoints, np.zeros((2, 18)), ("a",), (10, 10))
    with pytest.raises(ValueError, match="frame_size"):
        PoseSequence(keypoints, np.zeros((2, 18)), ("a", "b"), (10,))
    sequence = PoseSequence(keypoints, np.zeros((2, 18)), ["a", "b"], (10, 10))
    assert sequence.names == ("a", "b") and not sequence.keypoints.flags.writeable
