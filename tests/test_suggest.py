"""`igldt suggest`: scores against hand computations, diversity, the CLI's files and its one-line errors."""
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from igldt import suggest as S
from igldt.cli.main import cli


def onehot_softmax(labels, classes=3, sure=0.8):
    """1 x C x H x W softmax putting `sure` on each pixel's label and the rest spread evenly."""
    labels = torch.as_tensor(labels)
    p = torch.full((classes, *labels.shape), (1 - sure) / (classes - 1))
    p.scatter_(0, labels[None], sure)
    return p[None]


def test_pixel_maps_against_hand_computation():
    g = torch.tensor([[[[0.7, 0.2]], [[0.3, 0.8]]]])  # 1 x 2 classes x 1 x 2 pixels
    l = torch.tensor([[[[0.4, 0.1]], [[0.6, 0.9]]]])
    assert S.disagreement_map(g, l).tolist() == [[[1.0, 0.0]]]
    kl0 = 0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6) + 0.4 * math.log(0.4 / 0.7) + 0.6 * math.log(0.6 / 0.3)
    kl1 = 0.2 * math.log(0.2 / 0.1) + 0.8 * math.log(0.8 / 0.9) + 0.1 * math.log(0.1 / 0.2) + 0.9 * math.log(0.9 / 0.8)
    torch.testing.assert_close(S.symmetric_kl_map(g, l)[0, 0], torch.tensor([kl0, kl1]))
    h0 = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    torch.testing.assert_close(S.entropy_map(g)[0, 0, 0], torch.tensor(h0))
    assert float(S.symmetric_kl_map(g, g).abs().max()) < 1e-6


def test_image_scores_and_class_balance_by_hand():
    # image A: 4 pixels, ensemble classes [0, 0, 0, 1], the teachers differ on the class-1 pixel only;
    # image B: 4 pixels of class 0, they differ on two of them.
    a_g, a_l = onehot_softmax([[0, 0, 0, 1]], sure=0.9), onehot_softmax([[0, 0, 0, 2]], sure=0.6)
    b_g, b_l = onehot_softmax([[0, 0, 0, 0]], sure=0.9), onehot_softmax([[0, 1, 1, 0]], sure=0.6)
    stats = [S.image_stats(a_g, a_l, 3), S.image_stats(b_g, b_l, 3)]
    scores = S.pool_scores(stats)
    np.testing.assert_allclose(scores["disagreement"], [0.25, 0.5])
    assert stats[0].class_pixels.tolist() == [3, 1, 0] and stats[0].class_disagree.tolist() == [0, 1, 0]
    assert stats[1].class_disagree.tolist() == [2, 0, 0]
    assert stats[0].top_pair[:2] == (1, 2) and stats[0].top_pair[2] == pytest.approx(0.25)
    # median-frequency weights over the pool's predictions: f_0 = 7/8, f_1 = 1/4 (class 1 only in A);
    # torch's median of two is the lower, 1/4: w_0 = (1/4)/(7/8) = 2/7, w_1 = 1
    np.testing.assert_allclose(scores["balanced"], [1 * 1 / 4, 2 / 7 * 2 / 4])
    # the rare-class disagreement of A now outranks B's larger share of road-like pixels
    assert S.ranking(scores, "balanced").tolist() == [0, 1] and S.ranking(scores, "disagreement").tolist() == [1, 0]
    one = S.image_stats(a_g, None, 3)
    assert math.isnan(one.disagreement) and one.entropy == pytest.approx(float(S.entropy_map(a_g).sum()))


def test_ranking_random_is_seeded_and_one_network_refuses_disagreement():
    scores = {"disagreement": np.full(5, np.nan), "entropy": np.array([0.1, 0.5, 0.3, 0.5, 0.0])}
    assert S.ranking(scores, "entropy").tolist() == [1, 3, 2, 0, 4]  # ties keep pool order
    assert S.ranking(scores, "random", 3).tolist() == S.ranking(scores, "random", 3).tolist()
    assert sorted(S.ranking(scores, "random", 3).tolist()) == list(range(5))
    with pytest.raises(ValueError, match="needs two teachers"):
        S.ranking(scores, "disagreement")


def test_diversity_drops_an_exact_duplicate_and_spreads_the_picks():
    # 1 duplicates 0; 3 lies between 0 and 2; scores rank them 0, 1, 3, 2, 4
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.9, 0.1]])
    scores = np.array([0.9, 0.9, 0.5, 0.6, 0.1])
    order = S.ranking({"disagreement": scores}, "disagreement")
    assert order.tolist() == [0, 1, 3, 2, 4]
    # after 0: 1 gains 0.9 x 0 (a duplicate), 3 gains 0.6 x 0.29, 2 gains 0.5 x 1: 2 comes next, then 3
    assert S.diverse_picks(order, scores, f, 3) == [0, 2, 3]
    assert S.diverse_picks(order, scores, f, 3, shortlist=1) == [0, 3, 1]  # only the best 3: the duplicate last
    assert S.diverse_picks(order, scores, f, 5) == [0, 2, 3, 4, 1]  # the duplicate only when nothing else is left
    assert S.closest_pair(f[[0, 2]]) == pytest.approx(1.0) and S.closest_pair(f[[0, 1]]) == pytest.approx(0.0)
    assert S.median_nearest(f, chunk=2) == pytest.approx(1 - 0.9 / math.hypot(0.9, 0.1), abs=1e-9)


def test_cluster_picks_take_the_best_of_each_part_of_the_pool():
    """Two groups of images far apart, 6 and 3 of them; the 3 best scores all in the large one. Two
    picks by score alone take both from it; one per cluster takes each group's best. Exact duplicates
    share a cluster, so a duplicate of a pick comes only when there are more clusters than distinct images."""
    rng = np.random.default_rng(0)
    big = np.array([1.0, 0.0, 0.0]) + rng.normal(0, 0.01, (6, 3))
    small = np.array([0.0, 1.0, 0.0]) + rng.normal(0, 0.01, (3, 3))
    f = np.concatenate([big, small])
    scores = np.array([0.5, 0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.6, 0.4])
    assert S.cluster_picks(scores, f, 2) == [1, 7]
    assert S.cluster_picks(scores, f, 2, seed=5) == [1, 7]  # the seed moves k-means' start, not this answer
    dup = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert S.cluster_picks(np.array([0.9, 0.8, 0.7, 0.1]), dup, 2) == [0, 3]
    three = S.cluster_picks(np.array([0.9, 0.8, 0.7, 0.1]), dup, 3)  # more clusters than distinct points
    assert three[0] == 0 and 3 in three and len(set(three)) == 3
    result = S.PoolResult([str(i) for i in range(9)], [], f, {"disagreement": scores})
    assert S.suggest(result, 2, "disagreement", True, diversity="clusters")[0] == [1, 7]
    from igldt.cli.suggest import suggest as cli_suggest
    assert tuple(next(o for o in cli_suggest.params if o.name == "diversity").type.choices) == S.DIVERSITY
    with pytest.raises(ValueError, match="diversity 'nearest'"):
        S.suggest(result, 2, "disagreement", True, diversity="nearest")


@pytest.fixture(scope="module")
def teachers_file(tmp_path_factory, tiny_demo):
    """Two untrained ResNet-18 teachers saved as the teachers stage would, their config naming tiny_demo
    at half its images labelled (4 labelled, 4 in the pool)."""
    from igldt.checkpoint import save_checkpoint, student_payload, teachers_payload
    from igldt.config import load_config
    from igldt.data import build_dataset
    from igldt.models import build_segmenter

    cfg = load_config("demo", [f"data.root={tiny_demo}", "data.fraction=0.5"])
    ds = build_dataset("demo", tiny_demo, "train")
    meta = {"classes": ds.classes, "palette": ds.palette}
    torch.manual_seed(0)
    g, l = build_segmenter("resnet18", len(ds.classes)).eval(), build_segmenter("resnet18", len(ds.classes)).eval()
    folder = tmp_path_factory.mktemp("suggest")
    save_checkpoint(folder / "student.pt", student_payload(g, None, meta, cfg))
    return save_checkpoint(folder / "teachers.pt", teachers_payload(g, l, meta, cfg)), cfg


def test_suggest_writes_lists_scores_and_sheet(teachers_file, tmp_path):
    from igldt.data.loaders import train_datasets
    from igldt.data.splits import read_split_file

    path, cfg = teachers_file
    out = tmp_path / "round1"
    r = CliRunner().invoke(cli, ["suggest", "--teachers", str(path), "--count", "2", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    picked = read_split_file(out / "suggested.txt")
    rows = (out / "scores.csv").read_text().splitlines()
    assert len(picked) == 2 and len(rows) == 1 + 4  # a header and every pool image
    assert [row.split(",")[1] for row in rows[1:] if row.split(",")[2] == "1"] == picked
    labelled, pool = train_datasets(cfg.data)
    # the written lists round-trip through the training data reader: the picks move to the labelled set
    enlarged = cfg.data.__class__(**{**cfg.data.__dict__, "labelled_list": str(out / "labeled.txt"),
                                     "unlabelled_list": str(out / "unlabeled.txt")})
    l2, u2 = train_datasets(enlarged)
    assert list(l2.ids) == [*labelled.ids, *picked] and sorted(u2.ids) == sorted(set(pool.ids) - set(picked))
    import cv2
    sheet = cv2.imread(str(out / "suggested.png"))
    assert sheet is not None and sheet.shape[1] > 4 * 320  # four columns: image, two teachers, heat
    r = CliRunner().invoke(cli, ["suggest", "--teachers", str(path), "--count", "2", "--out", str(out)])
    assert r.exit_code != 0 and "already holds" in r.output  # nothing overwritten silently


def test_suggest_with_one_network_ranks_by_entropy(teachers_file, tmp_path):
    path, _ = teachers_file
    student = path.with_name("student.pt")
    r = CliRunner().invoke(cli, ["suggest", "--weights", str(student), "-k", "1", "--out", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "by entropy" in r.output
    r = CliRunner().invoke(cli, ["suggest", "--weights", str(student), "--method", "kl", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "needs two teachers" in r.output


@pytest.mark.parametrize("case, args, message", [
    ("student as teachers", ["--teachers", "{student}"], "not two teachers"),
    ("count past the pool", ["--teachers", "{teachers}", "--count", "5"], "larger than the unlabelled pool (4 images)"),
    ("no pool", ["--teachers", "{teachers}", "-o", "data.fraction=null"], "pool of"),
])
def test_suggest_bad_input_one_line(teachers_file, tmp_path, case, args, message):
    path, _ = teachers_file
    args = [a.format(student=path.with_name("student.pt"), teachers=path) for a in args]
    r = CliRunner().invoke(cli, ["suggest", *args, "--out", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 2, r.output
    error = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and message in error[0], r.output


def test_suggest_leaves_autograd_as_it_found_it(teachers_file, tmp_path):
    """The verb runs its networks under no_grad, never by switching autograd off for the process (a later
    training in the same process, as in this suite, would then fail to backpropagate)."""
    path, _ = teachers_file
    assert torch.is_grad_enabled()
    r = CliRunner().invoke(cli, ["suggest", "--teachers", str(path), "-k", "1", "--out", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert torch.is_grad_enabled()
