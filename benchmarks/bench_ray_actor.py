"""Does a Ray worker process slow analyze_many down? The same loop in this process and in a plain
Ray actor, on one host, alternating, with plain generate timed beside it in each place.

Each round: in this process, plain generate (warm) then ``analyze_many`` (saving to a temporary
folder) over the same prompts; then the same in one Ray actor (``num_gpus=1`` on CUDA, the
``--actor-cpus`` CPUs). The model of this process is dropped before the actor builds its own, so
both use the same GPU kind and never share one. Shapes are warmed in each place first (an
untimed plain generate and analyze_many pass), so both sides time steady-state batches. Prints
each round's rates and the ratio analyze_many / generate in each place: if the actor's ratio is
lower on the same host, something in a Ray worker process slows the launching thread (the
eighth session's open question, benchmarks/README.md).

    python benchmarks/bench_ray_actor.py                      # one H200, 8B-class random Llama
    python benchmarks/bench_ray_actor.py --device cpu --layers 2 --hidden 64 --prompts 16 --batch 8 --new-tokens 8 --rounds 1   # smoke
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_batch as bb  # noqa: E402


class Place:
    """The workload in one place (this process or an actor): a model, its prompts, timed runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device, dtype = bb.device_and_dtype(args)
        if self.device.type == "cuda" and "CUDA_VISIBLE_DEVICES" in os.environ:
            self.device = torch.device("cuda")  # an actor sees its own GPU as cuda:0
        self.model = bb.build_model(args, args.vocab, self.device, dtype)
        self.tok = bb.word_tokenizer(args.vocab)
        self.prompts = bb.make_prompts(args.prompts, args.min_len, args.max_len, args.vocab)
        a = args
        bb.plain_generate(self.model, self.tok, self.prompts, a.batch, a.new_tokens, self.device)  # shapes, untimed
        bb.traced(self.model, self.tok, self.prompts, a.batch, a.new_tokens, self.device, False)  # its own, untimed

    def where(self) -> str:
        return (f"pid {os.getpid()}, torch threads {torch.get_num_threads()}, OMP_NUM_THREADS "
                f"{os.environ.get('OMP_NUM_THREADS')}, CUDA_VISIBLE_DEVICES {os.environ.get('CUDA_VISIBLE_DEVICES')}")

    def run(self) -> tuple[float, float]:
        """(plain generate tok/s, analyze_many tok/s saving every trace)."""
        a = self.args
        g_s, g_tok = bb.plain_generate(self.model, self.tok, self.prompts, a.batch, a.new_tokens, self.device)
        t_s, t_tok = bb.traced(self.model, self.tok, self.prompts, a.batch, a.new_tokens, self.device, False)
        return g_tok / g_s, t_tok / t_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bb.add_model_args(ap)
    ap.add_argument("--prompts", type=int, default=192)
    ap.add_argument("--min-len", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=800)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="process / actor pairs, alternating")
    ap.add_argument("--actor-cpus", type=float, default=1.0, help="the actor's num_cpus (Ray sizes its threads to it)")
    args = ap.parse_args()

    import ray

    here = os.path.dirname(os.path.abspath(__file__))  # the actor imports bench_batch too (a local Ray
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))  # inherits this)
    ray.init(include_dashboard=False, log_to_driver=False)
    gpus = 1 if args.device.startswith("cuda") else 0
    Actor = ray.remote(num_gpus=gpus, num_cpus=args.actor_cpus)(Place)
    print(f"{args.prompts} prompts of {args.min_len}-{args.max_len} tokens, batch {args.batch}, {args.new_tokens} "
          f"new tokens; the actor with {gpus} GPU and {args.actor_cpus:g} CPUs", flush=True)
    rows = []
    for r in range(args.rounds):
        here = Place(args)
        g, t = here.run()
        print(f"  round {r + 1}, this process ({here.where()}): generate {g:8.1f} tok/s, analyze_many {t:8.1f} tok/s: "
              f"{t / g:.2f}x", flush=True)
        rows.append(("process", t / g))
        del here
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        actor = Actor.remote(args)
        g, t = ray.get(actor.run.remote())
        print(f"  round {r + 1}, Ray actor ({ray.get(actor.where.remote())}): generate {g:8.1f} tok/s, "
              f"analyze_many {t:8.1f} tok/s: {t / g:.2f}x", flush=True)
        rows.append(("actor", t / g))
        ray.kill(actor)
        time.sleep(2)  # its GPU memory released before the next round
    ray.shutdown()
    for place in ("process", "actor"):
        ratios = [x for p, x in rows if p == place]
        print(f"{place:>8}: analyze_many / generate {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} round(s)")


if __name__ == "__main__":
    main()
