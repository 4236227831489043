"""Benchmark of one full pretraining step: samples per second, peak memory, and the share of
the step spent outside the encoders (losses, banks, momentum update).

Run by hand:  python bench/pretrain_step.py [--size small] [--batch 64] [--steps 5] [--device cpu]
              [--bf16] [--compile] [--json out.json] [--threads N] [--finetune]

A step = both branches, all losses (contrast, consistency, knowledge transfer both ways),
banks of 16384 keys and K = 8192, SGD update. The "encoders only" figure runs the same four
encoder passes (query forward + backward, key forward, per modality) with a plain loss, so
the difference is what the method adds on top of the encoders. `--finetune` also times one
fine-tuning step (classifier on both branches, cross-entropy, SGD). Besides wall time, each
figure gives the process's CPU seconds per step, which a machine shared with other jobs
disturbs far less (with --threads 1 it is the step's work). `--compile` compiles the query
and key branches in place as `model.compile: true` does (the first step, which compiles, is timed
on its own; the encoders-only figure is then left out, as it would run them uncompiled).
`--json` writes the numbers for bench/loader.py (--step-json) to compare the loader against.
Results go in bench/RESULTS.md (CPU) and bench/RESULTS-gpu.md (bench/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from slrpipe.config import FinetuneParams, PretrainParams, load_params
from slrpipe.engine.compiling import compile_in_place
from slrpipe.model.classifier import build_classifier
from slrpipe.pretrain.model import Pretrainer

FRAMES = 64


def random_view(batch: int, device: torch.device, generator: torch.Generator) -> dict:
    shapes = {"right_hand": 21, "left_hand": 21, "trunk": 7}
    view = {kind: {p: torch.rand(batch, FRAMES, v, 2, generator=generator).to(device) for p, v in shapes.items()}
            for kind in ("joint", "motion")}
    view["mask"] = {p: (torch.rand(batch, FRAMES, v, generator=generator) > 0.1).to(device) for p, v in shapes.items()}
    return view


def timed(step, steps: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per step."""
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the branches (model.compile: true)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--finetune", action="store_true", help="also time a fine-tuning step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    params = load_params(args.params)
    size = params.model.model_copy(update={"size": args.size}).chosen  # with the model: forms
    settings = PretrainParams(bank_size=16384, transfer_top_k=8192)  # the paper's banks and K, every term on
    torch.manual_seed(0)
    model = Pretrainer(size, settings).to(device)
    compile_in_place([branches[m] for branches in (model.query, model.key) for m in model.modalities], args.compile)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    view_q, view_k = random_view(args.batch, device, generator), random_view(args.batch, device, generator)

    def full_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            terms, _ = model(view_q, view_k)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()

    def encoders_only() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = sum(sum(model.query[m].encoder(view_q[m], view_q["mask"]).values()).sum() for m in model.modalities)
            with torch.no_grad():
                for m in model.modalities:
                    model.key[m].encoder(view_k[m], view_k["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    full_step()  # the first step: compilation with --compile, kernel selection and allocation on a GPU
    if device.type == "cuda":
        torch.cuda.synchronize()
    first = time.perf_counter() - started
    full, full_cpu = timed(full_step, args.steps, device)
    encoders, encoders_cpu = (None, None) if args.compile else timed(encoders_only, args.steps, device)
    parameters = sum(p.numel() for p in model.query["joint"].parameters())
    print(f"size {args.size}: {parameters / 1e6:.2f} M parameters per encoder with heads; batch {args.batch}, T' {FRAMES}, "
          f"{device}{' bf16' if args.bf16 else ''}{' compiled' if args.compile else ''}, torch threads {torch.get_num_threads()}")
    print(f"first step     {first:8.3f} s")
    print(f"full step      {full:8.3f} s  {args.batch / full:8.1f} samples/s  CPU {full_cpu:8.3f} s")
    if encoders is not None:
        print(f"encoders only  {encoders:8.3f} s  {args.batch / encoders:8.1f} samples/s  CPU {encoders_cpu:8.3f} s")
        print(f"losses + banks + momentum update: {100 * (full - encoders) / full:.1f} % of the step")
    graphs = None
    if args.compile:
        from torch._dynamo.utils import counters

        graphs = counters["stats"]["unique_graphs"]
        print(f"compiled graphs: {graphs} (query with gradients, key without; more would mean recompilation)")
    if args.finetune:
        del model, optimizer
        classifier = build_classifier(size, 100, FinetuneParams()).to(device).train()
        tune = torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.9)
        labels = torch.randint(0, 100, (args.batch,), generator=generator).to(device)

        def finetune_step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss = torch.nn.functional.cross_entropy(classifier(view_q), labels)
            tune.zero_grad(set_to_none=True)
            loss.backward()
            tune.step()

        tuned, tuned_cpu = timed(finetune_step, args.steps, device)
        print(f"finetune step  {tuned:8.3f} s  {args.batch / tuned:8.1f} samples/s  CPU {tuned_cpu:8.3f} s")
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    if peak_gpu is not None:
        print(f"peak GPU memory {peak_gpu:.2f} GiB")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({
            "size": args.size, "batch": args.batch, "device": str(device), "bf16": args.bf16, "compile": args.compile,
            "first_step_s": first, "step_s": full, "samples_per_second": args.batch / full,
            "encoders_only_samples_per_second": None if encoders is None else args.batch / encoders,
            "compiled_graphs": graphs, "peak_gpu_gib": peak_gpu}, indent=2) + "\n")


if __name__ == "__main__":
    main()
