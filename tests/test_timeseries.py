"""The discretiser on hand-written episode files, checked channel by channel (all 76)."""
import numpy as np
import pytest

from benchmark.data.loaders import EPISODE_HEADER, read_episodes
from benchmark.data.timeseries import CONTINUOUS_COLUMNS, HEADER, WIDTH, Normaliser, discretise, n_bins

NORMAL = {"Diastolic blood pressure": 59.0, "Fraction inspired oxygen": 0.21, "Glucose": 128.0, "Heart Rate": 86.0,
          "Height": 170.0, "Mean blood pressure": 77.0, "Oxygen saturation": 98.0, "Respiratory rate": 19.0,
          "Systolic blood pressure": 118.0, "Temperature": 36.6, "Weight": 81.0, "pH": 7.4}
NORMAL_CATEGORY = {"Capillary refill rate": "0.0", "Glascow coma scale eye opening": "4 Spontaneously",
                   "Glascow coma scale motor response": "6 Obeys Commands", "Glascow coma scale total": "15",
                   "Glascow coma scale verbal response": "5 Oriented"}


def write_episode(path, rows):
    lines = [",".join(EPISODE_HEADER)]
    for hours, values in rows:
        lines.append(",".join([str(hours)] + [values.get(ch, "") for ch in EPISODE_HEADER[1:]]))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def discretise_files(paths, ends, max_bins=512):
    table, origin = read_episodes(paths)
    values = {ch: table[ch].to_numpy(object) for ch in EPISODE_HEADER[1:]}
    return discretise(table["file"].to_numpy(), table["Hours"].to_numpy(), values, np.asarray(ends, float),
                      max_bins, origin)


def expected_rows(n, observed):
    """Expected [n, 76] from per-bin observations {bin: {channel: value}}: forward fill, normal values
    before the first observation, one-hot categories, masks."""
    col = {h: i for i, h in enumerate(HEADER)}
    out = np.zeros((n, WIDTH), np.float32)
    last = {}
    for b in range(n):
        for ch, v in observed.get(b, {}).items():
            last[ch] = v
            out[b, col[f"mask->{ch}"]] = 1
        for ch, normal in NORMAL.items():
            out[b, col[ch]] = float(last.get(ch, normal))
        for ch, normal in NORMAL_CATEGORY.items():
            out[b, col[f"{ch}->{last.get(ch, normal)}"]] = 1
    return out


def test_every_channel_of_a_hand_written_stay(tmp_path):
    path = write_episode(tmp_path / "1_episode1_timeseries.csv", [
        (0.5, {"Diastolic blood pressure": "60", "Heart Rate": "80", "Glascow coma scale eye opening": "4 Spontaneously"}),
        # same bin: later values win
        (0.9, {"Capillary refill rate": "1.0", "Heart Rate": "82", "Glascow coma scale motor response": "Obeys Commands",
               "Glascow coma scale total": "15", "Glascow coma scale verbal response": "Confused", "Glucose": "140",
               "Height": "175", "Mean blood pressure": "70", "Oxygen saturation": "95", "Respiratory rate": "18",
               "Systolic blood pressure": "120", "Temperature": "37.2", "Weight": "90", "pH": "7.35"}),
        # bin 1 empty; bin 2: the MetaVision and CareVue spellings have their own columns
        (2.5, {"Fraction inspired oxygen": "0.5", "Glascow coma scale eye opening": "To Pain",
               "Glascow coma scale motor response": "2 Abnorm extensn", "Glascow coma scale verbal response": "1.0 ET/Trach",
               "Glascow coma scale total": "7"}),
        (4.0, {"Heart Rate": "101"}),  # exactly at the end: bin 3, kept
        (4.3, {"Heart Rate": "150", "pH": "7.0"}),  # after the end: dropped
    ])
    flat, offsets = discretise_files([path], [4.0])
    assert offsets.tolist() == [0, 4]
    observed = {
        0: {"Diastolic blood pressure": "60", "Glascow coma scale eye opening": "4 Spontaneously", "Capillary refill rate": "1.0",
            "Heart Rate": "82", "Glascow coma scale motor response": "Obeys Commands", "Glascow coma scale total": "15",
            "Glascow coma scale verbal response": "Confused", "Glucose": "140", "Height": "175", "Mean blood pressure": "70",
            "Oxygen saturation": "95", "Respiratory rate": "18", "Systolic blood pressure": "120", "Temperature": "37.2",
            "Weight": "90", "pH": "7.35"},
        2: {"Fraction inspired oxygen": "0.5", "Glascow coma scale eye opening": "To Pain",
            "Glascow coma scale motor response": "2 Abnorm extensn", "Glascow coma scale verbal response": "1.0 ET/Trach",
            "Glascow coma scale total": "7"},
        3: {"Heart Rate": "101"},
    }
    np.testing.assert_array_equal(flat, expected_rows(4, observed))
    col = {h: i for i, h in enumerate(HEADER)}
    assert flat[1, col["Fraction inspired oxygen"]] == pytest.approx(0.21)  # normal value before the first observation
    assert flat[3, col["Glascow coma scale eye opening->To Pain"]] == 1 and flat[3, col["Glascow coma scale eye opening->4 Spontaneously"]] == 0


def test_header_has_76_columns_in_the_reference_order():
    assert WIDTH == 76 and len(CONTINUOUS_COLUMNS) == 12
    assert HEADER[:2] == ["Capillary refill rate->0.0", "Capillary refill rate->1.0"]
    assert HEADER[2] == "Diastolic blood pressure" and HEADER[58] == "pH" and HEADER[59] == "mask->Capillary refill rate"
    assert [HEADER[i] for i in (4, 12, 24, 37, 49)] == [
        "Glascow coma scale eye opening->To Pain", "Glascow coma scale motor response->1 No Response",
        "Glascow coma scale total->11", "Glascow coma scale verbal response->1 No Response", "Glucose"]


def test_bins_follow_the_reference_arithmetic():
    assert n_bins(np.array([4.0, 4.5, 0.3, 0.0, -2.0, np.nan])).tolist() == [4, 5, 1, 48, 48, 48]


def test_only_the_last_512_bins_are_kept_and_forward_fill_crosses_the_cut(tmp_path):
    path = write_episode(tmp_path / "2_episode1_timeseries.csv", [
        (0.5, {"Heart Rate": "70"}), (100.5, {"Glucose": "200"}), (590.0, {"Heart Rate": "120"})])
    flat, offsets = discretise_files([path], [600.0])
    assert offsets.tolist() == [0, 512]  # bins 88 .. 599
    col = {h: i for i, h in enumerate(HEADER)}
    assert flat[0, col["Heart Rate"]] == 70 and flat[0, col["mask->Heart Rate"]] == 0  # filled from bin 0
    assert flat[99 - 88, col["Glucose"]] == 128 and flat[100 - 88, col["Glucose"]] == 200  # hour 100.5 -> bin 100
    assert flat[-1, col["Heart Rate"]] == 120 and flat[589 - 88, col["mask->Heart Rate"]] == 1


def test_stay_with_no_rows_gets_normal_values_and_no_masks(tmp_path):
    path = write_episode(tmp_path / "3_episode1_timeseries.csv", [])
    flat, offsets = discretise_files([path], [3.0])
    np.testing.assert_array_equal(flat, expected_rows(3, {}))


def test_several_stays_at_once_match_one_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    paths, ends = [], []
    for k in range(5):
        rows = [(round(float(h), 3), {"Heart Rate": str(int(rng.integers(50, 150))), "Glucose": "" if rng.random() < .5 else "99"})
                for h in np.sort(rng.uniform(0, 30, 20))]
        paths.append(write_episode(tmp_path / f"{k}_episode1_timeseries.csv", rows))
        ends.append(float(rng.uniform(5, 30)))
    together, offsets = discretise_files(paths, ends, max_bins=16)
    for k in range(5):
        alone, _ = discretise_files([paths[k]], [ends[k]], max_bins=16)
        np.testing.assert_array_equal(together[offsets[k]:offsets[k + 1]], alone)


def test_normaliser_scores_only_continuous_columns():
    rng = np.random.default_rng(1)
    flat = rng.normal(5, 2, size=(500, WIDTH)).astype(np.float32)
    norm = Normaliser.fit(flat)
    out = norm.transform(flat)
    c = CONTINUOUS_COLUMNS
    np.testing.assert_allclose(out[:, c].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, c].std(0, ddof=1), 1, atol=1e-5)
    others = np.setdiff1d(np.arange(WIDTH), c)
    np.testing.assert_array_equal(out[:, others], flat[:, others])
    ref = Normaliser.reference()
    assert ref.means.shape == (WIDTH,) and ref.stds[c].min() > 0
