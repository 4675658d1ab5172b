"""Writing `train.json` and the loss plot beside what a training run made (`DIR/model/`,
`DIR/lora.safetensors`, `DIR/embedding.pt`, `DIR/extractor/`). Reading them back, for lineage
and for screening against the training images, is `synthdata.generation.trained`."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from synthdata.fsutil import write_json_atomic

from synthdata.generation.trained import FORMAT, TRAIN_JSON

LOSS_PLOT = "loss.png"


def write_train_record(root: Path, record: dict) -> Path:
    """Write DIR/train.json (atomically) and DIR/loss.png."""
    record = {"format": FORMAT, **record}
    draw_loss(root / LOSS_PLOT, record.get("loss", {}), title=f"{record.get('name')} ({record.get('method')})")
    write_json_atomic(root / TRAIN_JSON, record)
    return root / TRAIN_JSON


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def draw_loss(path: Path, losses: dict[str, list[float]], title: str = "", width: int = 720,
              height: int = 360) -> None:
    """Loss per step of each stage (thin) and its moving average (thick), drawn with Pillow."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, y0, x1, y1 = 60, 30, width - 20, height - 40
    curves = [(name, v) for name, v in losses.items() if v]
    colours = ["#4a7fd4", "#d62728", "#2ca02c", "#9467bd"]
    draw.line([x0, y1, x1, y1], fill="black")
    draw.line([x0, y0, x0, y1], fill="black")
    draw.text((x0, 8), f"training loss: {title}", fill="black", font=font)
    if curves:
        top = max(max(v) for _, v in curves)
        bottom = min(min(v) for _, v in curves)
        span = (top - bottom) or 1.0
        for k, (name, values) in enumerate(curves):
            n = max(len(values) - 1, 1)
            colour = colours[k % len(colours)]

            def pts(vs: list[float]) -> list[tuple[float, float]]:
                return [(x0 + (x1 - x0) * i / n, y1 - (y1 - y0) * (v - bottom) / span) for i, v in enumerate(vs)]

            if len(values) > 1:
                draw.line(pts(values), fill="#c8c8c8", width=1)
                draw.line(pts(_smooth(values, max(1, len(values) // 50))), fill=colour, width=2)
            draw.text((x1 - 160, y0 + 14 * k), f"{name}: {len(values)} steps, last {values[-1]:.4f}",
                      fill=colour, font=font)
        draw.text((4, y0 - 4), f"{top:.3g}", fill="black", font=font)
        draw.text((4, y1 - 8), f"{bottom:.3g}", fill="black", font=font)
    draw.text((x0, y1 + 10), "step", fill="black", font=font)
    img.save(path, format="PNG")
