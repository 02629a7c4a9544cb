"""A ``quantize_model``'d user network end to end in Python: train with checkpoints, save the
train state, resume it in a fresh process-like setting (new instance, weights from the
quantized-state file), and end bit-identical to the uninterrupted run; evaluate both. Also
with LSQ-quantized weights (the learned steps and their optimizer state resume exactly)."""

import pytest
import torch
from torch import nn

import coarsegrad as cg
from coarsegrad.training.state import load_train_state, save_train_state


class UserNet(nn.Module):
    """A user's own class (not a Sequential): conv → ReLU → flatten → linear → ReLU → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.act1 = nn.ReLU()
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.act2 = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.conv(x.view(-1, 1, 6, 6)))
        return self.fc2(self.act2(self.fc1(h.flatten(1))))


LSQ_WEIGHTS = cg.WeightQuant("uniform", 4, "channel", step="lsq")


def _net(seed: int = 0, weight: cg.WeightQuant | None = None) -> nn.Module:
    torch.manual_seed(seed)
    return cg.quantize_model(UserNet(), act=cg.ActQuant(2, ste="clipped_relu"), weight=weight)


@pytest.mark.parametrize("weight", [None, LSQ_WEIGHTS])
def test_quantized_user_model_resumes_bit_identically(tmp_path, weight):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(5)
    X, y = torch.randn(60, 36, generator=g), torch.randint(0, 3, (60,), generator=g)
    config = cg.TrainConfig(steps=12, batch_size=10, optimizer="momentum", lr=0.05, seed=2,
                            stop_at_perfect=False)
    reference = _net(weight=weight)
    states = {}
    cg.train(reference, X, y, config, checkpoint_every=5, on_checkpoint=lambda s: states.__setitem__(s.step, s))
    assert sorted(states) == [5, 10]

    # what a user saves at step 5: the train state and the model file
    partial = _net(weight=weight)
    cg.train(partial, X, y, config.__class__(**{**config.__dict__, "steps": 5}))
    save_train_state(tmp_path / "state.safetensors", states[5])
    cg.save_quantized_state(tmp_path / "model.safetensors", partial)

    skeleton = UserNet() if weight is None else cg.quantize_model(UserNet(), act=None, weight=weight)
    resumed = cg.load_quantized_state(skeleton, tmp_path / "model.safetensors")
    cg.train(resumed, X, y, config, resume=load_train_state(tmp_path / "state.safetensors"))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert cg.evaluate(reference, X, y) == cg.evaluate(resumed, X, y)
    assert sum(isinstance(m, cg.QuantReLU) for m in resumed.modules()) == 2
    if weight is not None:  # the steps (compared exactly above) were trained
        assert not torch.equal(_net(weight=weight).fc1.weight_step, resumed.fc1.weight_step)
