"""A residual U-Net with deep supervision and optional multi-stream input.

After Prakash, Manconi and Loew (2021), "A new strategy to map landslides with
a generalized convolutional neural network", Scientific Reports 11, 9722: a
U-Net whose blocks are residual, with deep supervision (auxiliary
segmentation heads on the decoder at 1/2, 1/4 and 1/8 resolution besides the
main head at full resolution: four scales) and several input streams (for
example pre-event RGB, post-event RGB, hillshade + slope), each with its own
stem, fused by concatenation and a 1 x 1 convolution.

With ``residual=False`` and ``deep_supervision=False`` the same code builds
the classic U-Net of Ronneberger et al. (2015) (two 3 x 3 convolutions per
level, max pooling, transposed-convolution upsampling), the architecture of
the Landslide4Sense baseline.

Options (``SegModelConfig.extra``):

* ``widths`` (list of int, default ``[32, 64, 128, 256, 512]``): channels per level;
  the number of levels is ``len(widths)`` (at least 2).
* ``residual`` (bool, default True): residual blocks instead of plain double convolutions.
* ``deep_supervision`` (bool, default True): auxiliary heads at up to three coarser scales.
* ``aux_weights`` (list of float, default ``[0.5, 0.25, 0.125]``): loss weights of the
  auxiliary heads, finest first (the main head weighs 1).
* ``streams`` (list of lists of int, default one stream of all bands): 0-based
  positions of each stream's bands among the model's input bands.
* ``input_norm`` (``"none"`` or ``"tile"``, default ``"none"``): ``"tile"`` standardises
  every band of every input tile by the tile's own mean and standard deviation before
  the first convolution (:class:`TileStandardise`), so a brighter, darker or
  lower-contrast sensor looks the same to the network (issue 16: a model trained on
  Sichuan saw Bijie's darker, flatter images as background). No weights: model files
  without it load unchanged.

In eval mode ``forward`` returns the main logits ``(B, 1, H, W)``; in train mode
with deep supervision it returns ``(main, [aux, ...])``, every auxiliary map
upsampled to the input size. Any input size works: the input is padded to a
multiple of ``2 ** (levels - 1)`` and the output cropped back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from slidewise.engine.core.errors import InputError

if TYPE_CHECKING:
    from slidewise.engine.imagery.segmodels import SegModelConfig

DEFAULT_WIDTHS = (32, 64, 128, 256, 512)
DEFAULT_AUX_WEIGHTS = (0.5, 0.25, 0.125)
MAX_AUX_HEADS = 3


class ConvBlock(nn.Module):
    """Two 3 x 3 convolutions with batch norm and ReLU, optionally residual."""

    def __init__(self, cin: int, cout: int, residual: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class StreamEncoder(nn.Module):
    """Stems for each input stream, their fusion, and the downsampling levels."""

    def __init__(self, streams: list[list[int]], widths: list[int], residual: bool) -> None:
        super().__init__()
        self.streams = [list(s) for s in streams]
        for i, stream in enumerate(self.streams):
            self.register_buffer(f"stream_{i}", torch.tensor(stream, dtype=torch.long), False)
        self.stems = nn.ModuleList(ConvBlock(len(s), widths[0], residual) for s in self.streams)
        self.fuse: nn.Module = nn.Identity()
        if len(self.streams) > 1:
            self.fuse = nn.Sequential(
                nn.Conv2d(widths[0] * len(self.streams), widths[0], 1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True),
            )
        self.downs = nn.ModuleList(
            ConvBlock(widths[i - 1], widths[i], residual) for i in range(1, len(widths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the features of every level, finest first."""
        if len(self.streams) == 1 and self.streams[0] == list(range(x.shape[1])):
            feats = self.stems[0](x)
        else:
            parts = [
                stem(x.index_select(1, getattr(self, f"stream_{i}")))
                for i, stem in enumerate(self.stems)
            ]
            feats = self.fuse(torch.cat(parts, dim=1)) if len(parts) > 1 else parts[0]
        out = [feats]
        for down in self.downs:
            out.append(down(F.max_pool2d(out[-1], 2)))
        return out


#: Input normalisations of the resunet (``input_norm`` option).
INPUT_NORMS = ("none", "tile")
#: Smallest band standard deviation :class:`TileStandardise` divides by (in the units
#: of the stored normalisation, about 1 for a whole dataset): a uniform tile (water,
#: a cloud, nodata) is not blown up into noise.
MIN_TILE_STD = 0.05


class TileStandardise(nn.Module):
    """Standardise every band of every tile by its own mean and standard deviation.

    Per-image normalisation inside the network: what the model sees no longer
    depends on the sensor's brightness, contrast or colour balance, only on
    contrasts within the tile. Tiles of a few hundred pixels hold enough of a
    scene for stable statistics; a uniform tile is divided by at most
    :data:`MIN_TILE_STD`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True, unbiased=False).clamp_min(MIN_TILE_STD)
        return (x - mean) / std


class ResUNet(nn.Module):
    """Residual U-Net with deep supervision and multi-stream input (see module doc)."""

    def __init__(
        self,
        in_channels: int,
        widths: list[int] | tuple[int, ...] = DEFAULT_WIDTHS,
        residual: bool = True,
        deep_supervision: bool = True,
        aux_weights: list[float] | tuple[float, ...] = DEFAULT_AUX_WEIGHTS,
        streams: list[list[int]] | None = None,
        input_norm: str = "none",
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise InputError(
                f"Unknown resunet input_norm '{input_norm}': use {' or '.join(INPUT_NORMS)}."
            )
        self.input_norm: nn.Module = TileStandardise() if input_norm == "tile" else nn.Identity()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise InputError(
                f"resunet widths must be at least two positive channel counts, got {widths}."
            )
        if in_channels < 1:
            raise InputError(f"resunet needs at least one input band, got {in_channels}.")
        streams = [list(range(in_channels))] if not streams else [list(s) for s in streams]
        for s in streams:
            if not s:
                raise InputError("A resunet input stream is empty: give each stream its bands.")
            bad = [i for i in s if not 0 <= int(i) < in_channels]
            if bad:
                raise InputError(
                    f"Stream band position(s) {[i + 1 for i in bad]} are out of range: "
                    f"the model has {in_channels} input band(s); use 1..{in_channels}."
                )
        self.in_channels = in_channels
        self.levels = len(widths)
        self.encoder = StreamEncoder(streams, widths, residual)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):
            self.ups.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.decoders.append(ConvBlock(2 * widths[i], widths[i], residual))
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.deep_supervision = bool(deep_supervision)
        n_aux = min(MAX_AUX_HEADS, len(widths) - 2) if self.deep_supervision else 0
        # Decoder outputs are coarsest first; aux heads sit on the n_aux finest
        # outputs below full resolution (1/2, 1/4, 1/8).
        aux_channels = [widths[s] for s in range(1, n_aux + 1)]
        self.aux_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in aux_channels)
        weights = [float(w) for w in aux_weights][:n_aux]
        weights += [weights[-1] / 2 if weights else 0.5] * (n_aux - len(weights))
        self.aux_weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.input_norm(x)
        h, w = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        feats = self.encoder(x)
        y = feats[-1]
        decoded = []
        for up, dec, skip in zip(self.ups, self.decoders, reversed(feats[:-1]), strict=True):
            y = dec(torch.cat([up(y), skip], dim=1))
            decoded.append(y)
        main = self.head(y)[..., :h, :w]
        if not (self.training and self.aux_heads):
            return main
        size = x.shape[-2:]
        aux = []
        for scale, head in enumerate(self.aux_heads, start=1):
            feat = decoded[-1 - scale]
            logit = F.interpolate(head(feat), size=size, mode="bilinear", align_corners=False)
            aux.append(logit[..., :h, :w])
        return main, aux


def build_resunet(config: SegModelConfig) -> nn.Module:
    """Build a :class:`ResUNet` from a :class:`~slidewise.engine.imagery.segmodels.SegModelConfig`.

    Raises:
        InputError: unknown option or invalid widths or streams.
    """
    extra: dict[str, Any] = dict(config.extra or {})
    known = {"widths", "residual", "deep_supervision", "aux_weights", "streams", "input_norm"}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise InputError(
            f"Unknown resunet option(s) {', '.join(unknown)}: use {', '.join(sorted(known))}."
        )
    return ResUNet(
        in_channels=int(config.in_channels),
        widths=extra.get("widths", DEFAULT_WIDTHS),
        residual=bool(extra.get("residual", True)),
        deep_supervision=bool(extra.get("deep_supervision", True)),
        aux_weights=extra.get("aux_weights", DEFAULT_AUX_WEIGHTS),
        streams=extra.get("streams"),
        input_norm=str(extra.get("input_norm", "none")).strip().lower(),
    )
