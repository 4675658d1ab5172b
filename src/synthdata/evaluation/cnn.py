"""The utility curves' GPU classifier: a small CNN trained on the images, same protocols.

With a GPU (`--utility-classifier auto`, or `cnn` anywhere) the curves of `curves.py` train a
small ResNet (transformers `ResNetModel`, basic blocks, one gray channel, 16-32-64-128
channels) with a linear head on the preprocessed images (the evaluation's shared preprocessing
at `IMAGE_SIZE`), from a seeded random initialisation, with random translations:

- real only and `mixing`: `steps` AdamW steps on the training images;
- `pretrain` (RoentGen-v2): `steps` on the synthetic images, then `steps` on the real subset
  starting from those weights (all of them fine-tuned). The pre-trained network is computed
  once per evaluation and reused for every subset.

Fixed step counts (not epochs) keep small subsets from being under-trained. Seeds fix every
draw; on a GPU cuDNN is put in deterministic mode.
"""

from __future__ import annotations

import numpy as np
from synthdata.screening.embedders import preprocess

IMAGE_SIZE = 64
HIDDEN = (16, 32, 64, 128)
STEPS = 300
BATCH = 32
LEARNING_RATE = 2e-3
SHIFT = 4


def preprocess_images(images, size: int = IMAGE_SIZE) -> np.ndarray:
    """(n, 1, size, size) float32 arrays with the evaluation's shared preprocessing."""

    return np.stack([preprocess(img, size) for img in images])[:, None].astype(np.float32)


class CnnTrainer:
    """A `curves.Trainer` that trains the small CNN; x arrays are `preprocess_images` output."""

    def __init__(self, *, device: str = "cpu", steps: int = STEPS, batch: int = BATCH,
                 learning_rate: float = LEARNING_RATE, seed: int = 0):
        self.device, self.steps, self.batch = device, steps, batch
        self.learning_rate, self.seed = learning_rate, seed
        self._pretrained: dict[tuple, dict] = {}
        self.calls = 0

    def describe(self) -> dict:
        """The protocol's settings, for evaluation.json."""
        return {"classifier": "cnn", "architecture": f"ResNet basic {list(HIDDEN)}, 1 channel",
                "image_size": IMAGE_SIZE, "steps": self.steps, "batch": self.batch,
                "learning_rate": self.learning_rate, "augment": f"shift {SHIFT} px",
                "init": "random (seeded)", "device": self.device}

    def _network(self, n_labels: int):
        import torch
        from transformers import ResNetConfig, ResNetModel

        torch.manual_seed(self.seed)
        config = ResNetConfig(num_channels=1, embedding_size=HIDDEN[0], hidden_sizes=list(HIDDEN),
                              depths=[1] * len(HIDDEN), layer_type="basic",
                              downsample_in_first_stage=False)
        body = ResNetModel(config)
        head = torch.nn.Linear(HIDDEN[-1], n_labels)

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.head = body, head

            def forward(self, x):
                return self.head(self.body(pixel_values=x).pooler_output.flatten(1))

        return Net().to(self.device)

    def _fit(self, net, x: np.ndarray, y: np.ndarray, salt: int) -> None:
        import torch
        import torch.nn.functional as F

        gen = torch.Generator().manual_seed(self.seed * 7919 + salt)
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        yt = torch.from_numpy(np.asarray(y, np.int64))
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=1e-4)
        net.train()
        size = x.shape[-1]
        for _ in range(self.steps):
            idx = torch.randint(0, len(xt), (min(self.batch, len(xt)),), generator=gen)
            b = F.pad(xt[idx], (SHIFT,) * 4, mode="replicate")
            ox, oy = (int(v) for v in torch.randint(0, 2 * SHIFT + 1, (2,), generator=gen))
            b = b[:, :, oy:oy + size, ox:ox + size].to(self.device)
            loss = F.cross_entropy(net(b), yt[idx].to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def _predict(self, net, x: np.ndarray) -> np.ndarray:
        import torch

        net.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 256):
                logits = net(torch.from_numpy(np.ascontiguousarray(x[i:i + 256])).to(self.device))
                out.append(torch.softmax(logits.float(), 1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def __call__(self, x_train, y_train, x_test, n_labels, pretrain=None, mix=None) -> np.ndarray:
        import torch

        if self.device.startswith("cuda"):
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.calls += 1
        net = self._network(n_labels)
        if pretrain is not None:
            key = (id(pretrain[0]), len(pretrain[0]), n_labels)
            if key not in self._pretrained:
                self._fit(net, pretrain[0], pretrain[1], salt=1)
                self._pretrained[key] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(self._pretrained[key])
        if mix is not None:
            x_train = np.concatenate([x_train, mix[0]])
            y_train = np.concatenate([y_train, mix[1]])
        self._fit(net, x_train, y_train, salt=2)
        return self._predict(net, x_test)
