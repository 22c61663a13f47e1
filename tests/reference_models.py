"""Small models written out module by module, as the absLRP and PA-LRP authors' code sees them.

`TinyCNN`: conv / batch norm (not folded) / ReLU / max pool, adaptive average pool, flatten, dropout,
linear. `TinyViT`: a timm-style vision transformer — patch conv, class token, learnable position
embedding, pre-norm blocks (one qkv linear, attention written out or fused, GELU MLP, dropouts — or
nn.Identity in their place with `dropout=False` —, identity layer-scale and drop-path), final norm,
class-token select, head dropout, head. `TinyResNet`: a torchvision-style ResNet — conv / batch norm /
ReLU / max pool stem, basic blocks (conv–BN–ReLU–conv–BN plus an identity shortcut, or a 1×1 conv–BN
downsample shortcut), adaptive average pool, functional flatten, linear. All run in eval mode; dropouts
are identities then.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, classes)
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def _dropout(on: bool) -> nn.Module:
    """timm's dropout place: an nn.Dropout, or an nn.Identity when the model is built without dropout."""
    return nn.Dropout(0.1) if on else nn.Identity()


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, fused: bool = False, dropout: bool = True):
        super().__init__()
        self.heads, self.head_dim, self.fused = heads, dim // heads, fused
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = _dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = _dropout(dropout)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            q = q * self.scale
            attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: bool = True):
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(dim, hidden), nn.GELU(), _dropout(dropout)
        self.fc2, self.drop2 = nn.Linear(hidden, dim), _dropout(dropout)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, fused: bool = False, dropout: bool = True):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads, fused, dropout)
        self.ls1, self.drop_path1 = nn.Identity(), nn.Identity()
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, 2 * dim, dropout)
        self.ls2, self.drop_path2 = nn.Identity(), nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TinyViT(nn.Module):
    def __init__(
        self, image: int = 16, patch: int = 4, dim: int = 16, depth: int = 2, heads: int = 2, classes: int = 5,
        fused: bool = False, dropout: bool = True,
    ):  # fmt: skip
        super().__init__()
        self.patch = patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.5)
        self.pos_drop = _dropout(dropout)
        self.blocks = nn.Sequential(*(Block(dim, heads, fused, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.head_drop = _dropout(dropout)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        x = self.norm(self.blocks(x))
        return self.head(self.head_drop(x[:, 0]))


class BasicBlock(nn.Module):
    """torchvision's basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut), the shortcut x itself or, when
    the block changes stride or width, a 1×1 conv–BN downsample of x."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.blocks = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8), BasicBlock(8, 16, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.blocks(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _random_batch_norms(model: nn.Module) -> None:
    """Batch-norm statistics and affine parameters away from their initial values (eval mode reads them)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)


def models(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[TinyCNN, TinyViT]:
    """The CNN and the ViT with reproducible random weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    cnn = TinyCNN()
    _random_batch_norms(cnn)
    vit = TinyViT()
    return cnn.to(dtype).eval(), vit.to(dtype).eval()


def resnet(seed: int = 0, dtype: torch.dtype = torch.float64) -> TinyResNet:
    """The ResNet with reproducible random weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TinyResNet()
    _random_batch_norms(model)
    return model.to(dtype).eval()
