"""Train nanoGPT's character-level Shakespeare model on the CPU and report its validation loss.

nanoGPT's CPU configuration: 65 characters, the first 90% of tiny-shakespeare for training
and the last 10% for validation, context 64, batch 12, 4 layers, 4 heads, 128 wide, no
dropout, no biases in Linear and LayerNorm, exact GELU, the output head tied to the token
embedding, weights drawn from N(0, 0.02) (the residual projections 0.02/√(2·layers)),
AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on matrices only, gradients clipped at
norm 1.0, 100 warmup steps, then cosine decay to 1e-4 at step 2000; 2,000 steps.
Prints a sample that continues --prompt for --tokens characters (``model.generate``), then
the mean cross-entropy over the whole validation split in windows of 64 (nanoGPT's README:
1.88, estimated on 20 random batches). Saves the model and, beside it, its vocabulary.
Data comes from --data-dir, else $NNLITE_DATA, else the repository's datasets/ folder.
--quick trains 100 steps and validates on a tenth of the split (seconds); --plot DIR
writes the loss of every step there as PNG.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import Embedding, LayerNorm, Linear, PositionalEmbedding, TransformerBlock


def build(vocab: int, context: int = 64, width: int = 128, layers: int = 4, heads: int = 4,
          rng: np.random.Generator | None = None) -> nnlite.Model:
    """GPT: token and position embeddings, pre-norm transformer blocks, a tied head."""
    ids = nnlite.Input((context,))
    tokens = Embedding(vocab, width)
    h = PositionalEmbedding(context, width)(tokens(ids))
    for _ in range(layers):  # nanoGPT's Block: h + attn(ln_1(h)), then h + mlp(ln_2(h))
        h = TransformerBlock(width, heads, causal=True, bias=False)(h)
    head = Linear(width, vocab, bias=False)
    head.weight = tokens.weight                       # tied: one Parameter, used transposed
    model = nnlite.Model(ids, head(LayerNorm(width, bias=False)(h)))
    rng = rng or np.random.default_rng(0)
    for name, p in model.named_parameters():          # nanoGPT's initialisation
        if p.data.ndim == 2:
            std = 0.02 / np.sqrt(2 * layers) if name.endswith(
                ("out_proj.weight",)) or p.shape == (width, 4 * width) else 0.02
            p.data[...] = rng.normal(0, std, p.shape)
    return model


def windows(data: np.ndarray, starts: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs data[s:s+context] and targets data[s+1:s+context+1] for each start s."""
    index = starts[:, None] + np.arange(context)
    return data[index], data[index + 1]


class StepLosses(nnlite.callbacks.Callback):
    """Records the training loss of every step (one epoch here is the whole run)."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding tinyshakespeare/input.txt")
    parser.add_argument("--steps", type=int, help="default 2000, or 100 with --quick")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--prompt", default="ROMEO:", help="the text the sample continues")
    parser.add_argument("--tokens", type=int, default=300, help="characters to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads to split each batch among (2 trains faster on 2 cores)")
    parser.add_argument("--save", default="shakespeare_gpt.npz", help="where to save the model")
    parser.add_argument("--quick", action="store_true",
                        help="100 steps, validated on a tenth of the held-out text")
    parser.add_argument("--plot", metavar="DIR", help="write the loss curve there as PNG")
    args = parser.parse_args()
    args.steps = args.steps or (100 if args.quick else 2000)
    context = 64

    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    text = nnlite.datasets.load_tiny_shakespeare(root)
    vocab = nnlite.datasets.CharVocab(text)
    data = vocab.encode(text)                                           # ids 0..64
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]

    rng = np.random.default_rng(args.seed)
    nnlite.set_seed(args.seed)
    model = build(len(vocab), context, rng=rng)
    # One epoch of `steps` random windows is nanoGPT's `steps` random batches.
    x, y = windows(train, rng.integers(0, len(train) - context - 1,
                                       args.steps * args.batch_size), context)
    matrices = [p for p in model.parameters() if p.data.ndim >= 2]
    others = [p for p in model.parameters() if p.data.ndim < 2]
    optimizer = nnlite.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                                    {"params": others, "weight_decay": 0.0}], lr=args.lr,
                                   betas=(0.9, 0.99), max_grad_norm=1.0)
    schedule = nnlite.optim.WarmupCosineLR(optimizer, warmup_steps=min(100, args.steps // 2),
                                           total_steps=args.steps, min_lr=args.lr / 10)
    steps = StepLosses()
    start = time.perf_counter()
    model.fit(x, y, loss=nnlite.losses.CrossEntropy(), optimizer=optimizer, epochs=1,
              batch_size=args.batch_size, callbacks=[schedule, steps], seed=args.seed,
              threads=args.threads)
    seconds = time.perf_counter() - start
    print(f"trained {args.steps} steps in {seconds:.0f} s ({1000 * seconds / args.steps:.0f} "
          f"ms per step)")
    model.save(args.save)
    vocab.save(Path(args.save).with_suffix(".vocab.json"))
    prompt = vocab.encode(args.prompt)[None]
    print(vocab.decode(model.generate(prompt, args.tokens, seed=args.seed)[0]))
    if args.quick:
        val = val[:len(val) // 10]
    vx, vy = windows(val, np.arange(0, len(val) - context - 1, context), context)
    loss = model.evaluate(vx, vy, loss=nnlite.losses.CrossEntropy(), metrics=())["loss"]
    if args.plot:
        curve = nnlite.plot.plot_history({"loss": steps.losses}, xlabel="step")
        print("figures:", *nnlite.plot.save_figures(args.plot, {"loss": curve}))
    print(f"val loss: {loss:.4f}")


if __name__ == "__main__":
    main()
