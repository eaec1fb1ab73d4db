"""zoo.optim: Lookahead against a hand-computed trajectory, exact resume from its state_dict, evaluation with
the slow weights, and use from a LightningCLI config."""
import copy

import lightning as L
import pytest
import torch
from conftest import zoo_in_process
from torch.utils.data import DataLoader, TensorDataset

from zoo.optim import Lookahead, LookaheadSlowWeights, linear_cooldown


def test_linear_cooldown():
    f = linear_cooldown(10)
    assert [f(e) for e in (0, 4, 5, 6, 9)] == [1.0, 1.0, 1.0, 0.8, 0.2]


def test_lookahead_hand_trajectory():
    w = torch.nn.Parameter(torch.zeros(()))
    opt = Lookahead(torch.optim.SGD([w], lr=1.0), k=2, alpha=0.5)
    seen = []
    for _ in range(4):
        opt.zero_grad()
        w.backward()  # d w / d w = 1: each fast step subtracts 1
        opt.step()
        seen.append(w.item())
    # fast -1, -2 -> slow 0 + 0.5(-2 - 0) = -1; fast -2, -3 -> slow -1 + 0.5(-3 + 1) = -2
    assert seen == [-1.0, -1.0, -2.0, -2.0]
    assert opt.state[w]["slow"].item() == -2.0


def _run(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 3)
    opt = Lookahead(torch.optim.Adam(net.parameters(), lr=0.1), k=3, alpha=0.5)
    return net, opt


def _train(net, opt, steps, data_seed):
    g = torch.Generator().manual_seed(data_seed)
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def test_state_dict_resume_is_exact_and_needs_the_slow_weights():
    ref_net, ref_opt = _run()
    _train(ref_net, ref_opt, 4, 1)  # mid-cycle: 4 = one sync + 1 fast step
    saved_model = {k: v.clone() for k, v in ref_net.state_dict().items()}
    saved_opt = copy.deepcopy(ref_opt.state_dict())  # as a checkpoint file would hold it
    _train(ref_net, ref_opt, 5, 2)

    net, opt = _run(seed=99)
    net.load_state_dict(saved_model)
    opt.load_state_dict(saved_opt)
    _train(net, opt, 5, 2)
    for k, v in ref_net.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k

    lossy, lossy_opt = _run(seed=99)  # what the reference code restores: the inner state only
    lossy.load_state_dict(saved_model)
    lossy_opt.optimizer.load_state_dict(saved_opt["inner"])
    lossy_opt.fast_steps = saved_opt["fast_steps"]
    _train(lossy, lossy_opt, 5, 2)
    assert not torch.equal(lossy.weight, ref_net.weight)


def test_validation_sees_slow_weights_and_training_resumes_fast_ones():
    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)
            self.seen = []

        def training_step(self, batch, i):
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, i):
            opt = self.trainer.optimizers[0]
            self.seen.append(torch.equal(self.net.weight, opt.state[self.net.weight]["slow"]))

        def configure_optimizers(self):
            return Lookahead(torch.optim.SGD(self.parameters(), lr=0.5), k=4, alpha=0.5)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(30, 4), torch.randint(0, 2, (30,))), batch_size=5)  # 6 steps
    m = Probe()
    trainer = L.Trainer(max_epochs=2, callbacks=[LookaheadSlowWeights()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(m, data, data)
    opt = trainer.optimizers[0]
    assert m.seen and all(m.seen)  # every validation batch ran on the slow weights
    assert opt.fast_steps == 12 and torch.equal(m.net.weight, opt.state[m.net.weight]["slow"])  # ends on slow


def test_a_finished_run_resumed_from_its_checkpoint_is_tested_on_the_slow_weights(tmp_path):
    """Resuming a run whose training had ended returns from fit at once (no on_train_end), so only the test
    hooks put the slow weights in; 7 steps with k = 3 leave fast and slow apart."""
    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)
            self.tested = None

        def training_step(self, batch, i):
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def test_step(self, batch, i):
            self.tested = self.net.weight.detach().clone()

        def configure_optimizers(self):
            return Lookahead(torch.optim.SGD(self.parameters(), lr=0.5), k=3, alpha=0.5)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(35, 4), torch.randint(0, 2, (35,))), batch_size=5)  # 7 steps
    kw = dict(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path)
    first = Probe()
    trainer = L.Trainer(callbacks=[LookaheadSlowWeights()], **kw)
    trainer.fit(first, data)
    slow = first.net.weight.detach().clone()  # the model keeps the slow weights when training ends
    ckpt = next(tmp_path.rglob("*.ckpt"))
    again = Probe()
    trainer = L.Trainer(callbacks=[LookaheadSlowWeights()], **kw)
    trainer.fit(again, data, ckpt_path=ckpt)  # already finished: returns without training
    assert not torch.equal(again.net.weight, slow)  # the checkpoint holds the fast weights
    trainer.test(again, data)
    assert torch.equal(again.tested, slow) and not torch.equal(again.net.weight, slow)


def test_bad_arguments_say_what_to_do():
    w = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="base="):
        Lookahead(w)
    with pytest.raises(ValueError, match="k >= 1"):
        Lookahead(torch.optim.SGD(w, lr=0.1), k=0)


def test_lookahead_from_a_lightning_cli_config(tmp_path, capsys):
    args = ("fit", "--config", "configs/forward_forward/digits_backprop.yaml", "--optimizer=zoo.optim.Lookahead",
            "--optimizer.base=torch.optim.Adam", "--optimizer.base.lr=0.001", "--optimizer.k=3",
            "--trainer.callbacks+=zoo.optim.LookaheadSlowWeights", "--trainer.fast_dev_run=4",
            f"--trainer.default_root_dir={tmp_path}")
    with pytest.raises(SystemExit):
        zoo_in_process(*args, "--print_config")
    out = capsys.readouterr().out
    assert "class_path: zoo.optim.Lookahead" in out and "class_path: torch.optim.Adam" in out
    cli = zoo_in_process(*args)
    opt = cli.trainer.optimizers[0]
    assert isinstance(opt, Lookahead) and isinstance(opt.optimizer, torch.optim.Adam) and opt.k == 3
    assert cli.trainer.state.finished
