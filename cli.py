"""The `latticegym` command: pretrain, sample, evaluate, train, bench, envs."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import fields
from pathlib import Path

from . import DEFAULT_THREADS, quiet_libraries, set_threads
from .envs.registration import load_plugins
from .files import atomic_text
from .options import bounded

DEFAULT_DATA = Path("../shared/data")
DATASET_HINTS = {"perov": "perov_5", "carbon": "carbon_24", "mpts": "mpts_52", "mp_20": "mp_20", "mp20": "mp_20"}


# Upper bounds keep time and memory sane: far beyond any use, short of an allocation that kills the machine.
PROCESSES = bounded(int, 1, 1024, "an integer in 1..1024")
WORKERS = bounded(int, 0, 1024, "an integer in 0..1024")
ROUNDS = bounded(int, 1, 10**6, "an integer in 1..1,000,000")
SAMPLES = bounded(int, 0, 10**6, "an integer in 0..1,000,000")
SEEDS = bounded(int, 1, 100, "an integer in 1..100")
SEED = bounded(int, 0, 2**63 - 1, "an integer in 0..2**63-1")
CRYSTALS = bounded(int, 1, 10**7, "an integer in 1..10,000,000")
BATCH = bounded(int, 1, 2**16, "an integer in 1..65,536")
STEPS = bounded(int, 1, 1000, "an integer in 1..1000 (the priors' training timesteps)")
CORRECTORS = bounded(int, 0, 100, "an integer in 0..100")
WIDTH = bounded(int, 1, 4096, "an integer in 1..4096")
LAYERS = bounded(int, 1, 64, "an integer in 1..64")
LEARNING_RATE = bounded(float, 1e-12, 1.0, "a number in (0, 1]")
MINUTES = bounded(float, 0, 10080, "a number of minutes in 0..10080 (a week)")


def _guess_dataset(*paths: str) -> str | None:
    for path in paths:
        name = Path(path).name.lower()
        for hint, dataset in DATASET_HINTS.items():
            if hint in name:
                return dataset
    return None


@functools.cache
def _read(path: str):
    from .datasets import read_csv

    return read_csv(path, skip_bad=True, progress=True)


def _load_split(source: str, split: str | None, seed: int, default_split: str):
    """A CSV path (optionally our seeded split of it, as pretraining makes it), or a known dataset name (its canonical split)."""
    from .datasets import KNOWN_DATASETS, fetch
    from .datasets import fit_splits, split_dataset

    if not Path(source).exists() and source in KNOWN_DATASETS:
        names = fit_splits() if split == "fit" else [split or default_split]
        first, *rest = [_read(str(fetch(source, name))) for name in names]
        data = first.merged(*rest)
    else:
        data = _read(source)
        data = split_dataset(data, seed)[split] if split else data
    if data.skipped:
        print(f"{source}: skipped {len(data.skipped)} unreadable rows (first: row {data.skipped[0][0]}: {data.skipped[0][1]})", file=sys.stderr)
    return data


def _refuse_existing(out: str | None, overwrite: bool) -> None:
    if out and Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it or choose another --out")


def cmd_evaluate(args) -> int:
    from .benchmarks.metrics import evaluate, format_table

    _refuse_existing(args.out, args.overwrite)
    samples = _load_split(args.samples, None, args.split_seed, "test")
    if not samples.structures:
        first = f" (first: row {samples.skipped[0][0]}: {samples.skipped[0][1]})" if samples.skipped else ""
        raise ValueError(f"--samples {args.samples}: no readable crystals, {len(samples.skipped)} rows rejected{first}")
    reference = _load_split(args.reference, args.reference_split, args.split_seed, "test")
    train = _load_split(args.train, args.train_split, args.split_seed, "train") if args.train else None
    dataset = args.dataset or _guess_dataset(args.reference, args.samples)
    if dataset is None:
        print("note: dataset not recognised from the file names; pass --dataset for COV cutoffs", file=sys.stderr)
    skipped = len(samples.skipped)
    metrics = evaluate(samples.structures, reference.structures, train.structures if train else None, dataset=dataset, workers=args.workers, progress=True)
    if skipped:
        # Unreadable sample rows are failures, not omissions: count them as invalid.
        total = metrics["num_samples"] + skipped
        for key in ("struct_validity", "comp_validity", "validity"):
            metrics[key] = metrics[key] * metrics["num_samples"] / total
        metrics["num_samples"] = total
    metrics["dataset"] = dataset
    print(format_table(metrics))
    if train is None:
        print("novelty is n/a: pass --train with the prior's training crystals (e.g. --train ../shared/data/perov_5_val.csv.gz --train-split fit)", file=sys.stderr)
    if args.out:
        atomic_text(args.out, json.dumps(metrics, indent=1))
        print(f"wrote {args.out}")
    return 0


def cmd_pretrain(args) -> int:
    from .policies.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        layers=args.layers,
        seed=args.seed,
        split_seed=args.split_seed,
        hold_out_val=args.hold_out_val,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        name=args.name or "",
        minutes=args.minutes,
        init=args.init or "",
    )
    path = pretrain(cfg, resume=args.resume)
    print(f"prior written to {path}")
    return 0


def cmd_sample(args) -> int:
    import torch

    from .datasets import write_csv
    from .policies.checkpoint import load_prior

    _refuse_existing(args.out, args.overwrite)
    policy = load_prior(args.prior, num_steps=args.steps, device=args.device)
    policy.set_num_steps(args.steps, args.correctors)
    with torch.no_grad():
        batch = policy.generate(args.num, seed=args.seed, batch_size=args.batch_size, progress=True)
    structures = batch.to_structures()
    write_csv(structures, args.out)
    print(f"wrote {len(structures)} crystals to {args.out}")
    return 0


def cmd_envs(args) -> int:
    from .envs.registration import CUSTOM_ID
    from .envs.tasks import TASKS

    rows = [(t.env_id, t.prior, _label(t.reward), t.target, t.cost, _status(t)) for t in TASKS.values()]
    rows.append((CUSTOM_ID, "any (prior=...)", "any (reward=...)", "yours", "yours", ""))
    header = ("id", "prior", "reward", "target", "cost", "status")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    print_guards(TASKS.values())
    for t in TASKS.values():
        if t.experimental:
            print(f"experimental {t.name}: {t.experimental}")
    return 0


def _status(task) -> str:
    return "experimental" if task.experimental else ("registered by you" if task.cost == "yours" else "benchmark")


def _label(reward) -> str:
    """A reward as `latticegym envs` names it: its registered name, path or factory name."""
    return reward if isinstance(reward, str) else ("a config" if isinstance(reward, dict) else getattr(reward, "__name__", type(reward).__name__))


def print_guards(tasks) -> None:
    """Each family's guards with their thresholds and the share of real crystals and prior samples they refuse."""
    from .benchmarks.measure.guard_thresholds import shares
    from .rewards.composite import Guards

    measured = shares()
    families: dict[str, list] = {}
    for t in tasks:
        if t.cost != "yours":  # a task of your own has the guards its reward sets
            families.setdefault(t.prior, []).append(t)
    print("\nGuards, before any property is computed; refused: share of the prior's real crystals / of 256 of its samples")
    print("(`python -m latticegym.benchmarks.measure.guard_thresholds`):")
    for prior, members in families.items():
        guards = Guards(**members[0].reward_kwargs.get("guards", {}))
        print(f"{prior} tasks ({', '.join(t.name for t in members)}):")
        for name, text in guards.describe().items():
            real = measured[prior]["real"]["refused"].get(name, float("nan"))
            sampled = measured[prior].get("prior_samples", {}).get("refused", {}).get(name, float("nan"))
            print(f"  {name:24s} {text:75s} refused {real:6.2%} / {sampled:6.2%}")
    print("Magnetic tasks also need a CHGNet pressure within ±25 GPa; where a reward relaxes, the relaxed crystal must pass the guards too.")


def _options(pairs: list[str]) -> dict[str, str]:
    """--set pairs as strings; the agent's config parses each with its field's type."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def train_config(args):
    """The TrainConfig of `latticegym train`: the options given, over the checkpoint's settings on --resume.

    Each train option's `dest` is the TrainConfig field it sets; an option left out keeps the config's
    default, or on --resume the checkpoint's setting.
    """
    from .agents.trainer import TrainConfig, saved_state

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    if args.set:
        given["agent_options"] = _options(args.set)
    if args.plugin:
        given["plugins"] = tuple(args.plugin)
    if args.resume:
        saved = saved_state(args.out)["config"]
        return TrainConfig(**{**saved, **given})
    if "env_id" not in given:
        raise ValueError("--env is required (or --resume to continue the run in --out)")
    return TrainConfig(**given)


def cmd_train(args) -> int:
    from .agents.evaluation import evaluate_policy
    from .agents.trainer import Trainer

    cfg = train_config(args)
    if not cfg.novelty_reference:
        print("no --reference: the screen cannot check novelty and logs it as nan; pass the prior's training file (e.g. perov_5_val.csv.gz) to screen and count novel crystals", file=sys.stderr)
    trainer = Trainer(cfg)
    budget = f"until {cfg.budget} property evaluations or " if cfg.budget else ""
    print(
        f"{cfg.agent} on {cfg.env_id}: {budget}{cfg.iterations} iterations, each a pool of {trainer.pool_size} crystals, screened "
        f"({'relaxed' if cfg.relax else 'single-point'} E_hull), at most {trainer.batch_size} evaluated; T = {cfg.steps}; run directory {cfg.out}",
        file=sys.stderr,
    )
    before = evaluate_policy(trainer.prior, trainer.task, args.evaluate, label="prior", known=trainer.known, relax=cfg.relax) if args.evaluate and not args.resume else None
    try:
        out = trainer.run(resume=args.resume)
    except KeyboardInterrupt:
        done = trainer.iteration
        if done == 0:
            print("\nlatticegym train: interrupted before the first iteration finished; nothing was saved: run the command again (without --resume)", file=sys.stderr)
            return 130
        print(f"\nlatticegym train: interrupted in iteration {done}; {args.out}/checkpoint.pt holds {done} finished iterations: `latticegym train --out {args.out} --resume` continues", file=sys.stderr)
        return 130
    print(f"logs: {out / 'metrics.csv'}, {out / 'tensorboard'}; best crystals: {out / 'best.csv'}; every crystal: {out / 'evaluated.csv'}")
    print(f"fine-tuned policy: {out / 'policy.pt'} (latticegym sample --prior {out / 'policy.pt'} ...)")
    if args.evaluate:
        after = evaluate_policy(trainer.policy, trainer.task, args.evaluate, label="fine-tuned policy", known=trainer.known, relax=cfg.relax)
        rows = [("prior", before)] if before else []
        rows.append(("fine-tuned", after))
        print(f"{args.evaluate} fresh samples each, task reward without diversity filter (SUN success needs --reference):")
        print(f"{'':12s}{'success':>9s}{'SUN succ':>9s}{'reward':>9s}{'unique':>9s}")
        for name, m in rows:
            print(f"{name:12s}{m['success_rate']:9.3f}{m['sun_success']:9.3f}{m['reward_mean']:9.3f}{m['uniqueness']:9.3f}")
    return 0


def cmd_bench(args) -> int:
    from .benchmarks.runner import SweepConfig, run_suite
    from .agents import AGENTS
    from .benchmarks.suites import VARIANTS, BenchTask, Suite, get_suite

    agents = tuple(a.strip() for a in args.agents.split(",") if a.strip())
    if not agents:
        raise ValueError(f"--agents names no agent; choose from {', '.join([*AGENTS, *VARIANTS])}")
    if args.data and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such folder (it holds the priors' training CSVs, for novelty and the SUN hull)")
    unknown = set(agents) - set(AGENTS) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}; choose from {', '.join([*AGENTS, *VARIANTS])}")
    data_dir = args.data if args.data else (DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)
    for path in args.merge:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--merge {path}: no such file (a results.csv of another sweep of this suite)")
    if args.tabulate and not Path(args.out).is_dir():
        raise FileNotFoundError(f"--tabulate: {args.out} does not exist, so it holds no finished runs to tabulate")
    if args.env:
        settings = dict(budget=args.budget, batch_size=args.batch_size, steps=args.steps, policy_samples=args.policy_samples, hull_references=args.hull_references)
        tasks = tuple(BenchTask(env, **settings) for env in args.env.split(","))
        selector = f"--env {args.env} " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items()) + "".join(f" --plugin {p}" for p in args.plugin)
        suite = Suite("custom", tasks, f"budget {args.budget}, batch {args.batch_size}, T={args.steps}", selector)
    else:
        suite = get_suite(args.suite)
    only = tuple(name.strip() for name in (args.only or "").split(",") if name.strip())
    cfg = SweepConfig(out=args.out, agents=agents, seeds=args.seeds, data_dir=str(data_dir) if data_dir else None, device=args.device, ray_address=args.ray_address, run=not args.tabulate, only=only, merge=tuple(args.merge))
    results = run_suite(suite, cfg)
    out = Path(args.out)
    print((out / "results.md").read_text())
    print(f"{len(results)} runs; table: {out / 'results.csv'}, {out / 'results.md'}; plots: {out / 'learning_curves.png'}, {out / 'property_histograms.png'}, {out / 'gallery.png'}")
    return 0


def _device(text: str) -> str:
    """An argparse type: a torch device that exists on this machine."""
    import torch

    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + (["mps"] if torch.backends.mps.is_available() else [])
    name = text.strip().lower()
    known = name == "cpu" or name == "mps" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())
    exists = name in available or (name == "cuda" and torch.cuda.is_available())
    if not known or not exists:
        why = "is not a torch device" if not known else "is not available on this machine"
        raise argparse.ArgumentTypeError(f"{text!r} {why}; devices here: {', '.join(available)}")
    return name


def _common(p: argparse.ArgumentParser, device: bool = True) -> None:
    if device:
        p.add_argument("--device", type=_device, help="torch device: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE|FILE.py", help="import this first: a module or file that registers tasks and rewards of your own (repeatable)")
    p.add_argument("--threads", type=PROCESSES, default=DEFAULT_THREADS, help="torch intra-op threads (default: %(default)s; more rarely helps these small models and collapses on a busy machine)")
    p.add_argument("-v", "--verbose", action="store_true", help="show library messages (model loading, reference energies)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="latticegym", description="Crystal generation as reinforcement learning.")
    parser.add_argument("--version", action="version", version=f"latticegym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("evaluate", help="CDVAE/DiffCSP generation metrics of a CSV of crystals")
    p.add_argument("--samples", required=True, help="CSV with a cif column (CDVAE format), e.g. from `latticegym sample`")
    p.add_argument("--reference", required=True, help="reference CSV(.gz), or a dataset name (its test split), for coverage and Wasserstein distances")
    p.add_argument("--train", help="training CSV(.gz), or a dataset name (its train split), for novelty (without it novelty is not computed)")
    p.add_argument("--reference-split", choices=["train", "val", "test"], help="use this split of the --reference file, split as pretraining splits it (default: the whole file)")
    p.add_argument("--train-split", choices=["train", "val", "test", "fit"], help="use this split of --train; fit: train and val, the 90%% a prior trains on (default: the whole file)")
    p.add_argument("--split-seed", type=SEED, default=0, help="seed of those splits (default: %(default)s, pretraining's)")
    p.add_argument("--dataset", choices=["perov_5", "carbon_24", "mp_20", "mpts_52"], help="COV cutoffs (default: guessed from the file names)")
    p.add_argument("--workers", type=PROCESSES, help="processes for fingerprints (default: all cores)")
    p.add_argument("--out", help="also write the metrics as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _common(p, device=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pretrain", help="train a crystal diffusion prior on a CDVAE-format CSV")
    p.add_argument("--data", required=True, help="CDVAE-format CSV(.gz); 80/10/10 split by --split-seed, trained on the 90%% outside the test split")
    p.add_argument("--out", required=True, help="run directory: prior.pt (EMA weights), last.pt (resumable state), tensorboard/")
    p.add_argument("--epochs", type=ROUNDS, default=1000, help="passes over the training split; may be raised on --resume, the cosine LR schedule then stretches (default: %(default)s)")
    p.add_argument("--batch-size", type=BATCH, default=128, help="crystals per optimizer step (default: %(default)s)")
    p.add_argument("--lr", type=LEARNING_RATE, default=1e-3, help="peak learning rate of the cosine schedule (default: %(default)s)")
    p.add_argument("--hidden", type=WIDTH, default=128, help="denoiser width (default: %(default)s)")
    p.add_argument("--layers", type=LAYERS, default=4, help="denoiser message-passing layers (default: %(default)s)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the weights and the noise (default: %(default)s)")
    p.add_argument("--split-seed", type=SEED, default=0, help="seed of the train/val/test split (default: %(default)s)")
    p.add_argument("--hold-out-val", action="store_true", help="train on the 80%% only, so the logged val loss is held out")
    p.add_argument("--checkpoint-every", type=ROUNDS, default=5, help="epochs between checkpoints (default: %(default)s)")
    p.add_argument("--name", help="prior name recorded in the checkpoint; it picks the COV cutoffs and corrector step size (default: the data file's name less a _train/_val/_test suffix)")
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
    p.add_argument("--minutes", type=MINUTES, default=0.0, help="wall-clock budget: fit --epochs to it from the first epochs' speed (default: off)")
    p.add_argument("--init", help="start from this prior's weights (same data and network shape), e.g. a shipped prior's name")
    _common(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("sample", help="sample crystals from a prior into a CDVAE-format CSV")
    p.add_argument("--prior", required=True, help="shipped prior name (perov_5, carbon_24), a policy/prior .pt file, or a run directory (its policy.pt)")
    p.add_argument("--num", type=CRYSTALS, required=True, help="how many crystals")
    p.add_argument("--steps", type=STEPS, default=100, help="reverse-diffusion steps T (default: %(default)s)")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--correctors", type=CORRECTORS, default=0, help="Langevin corrector steps before each predictor step, DiffCSP's step sizes (default: %(default)s)")
    p.add_argument("--batch-size", type=BATCH, default=256, help="crystals denoised at once (default: %(default)s)")
    p.add_argument("--out", required=True, help="CSV file to write (cif column); written whole or not at all")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("envs", help="list the registered environments, their guards and status")
    _common(p, device=False)
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("train", help="fine-tune a task's prior with RL")
    p.add_argument("--env", dest="env_id", metavar="ENV", help="a registered task id, e.g. LatticeGym/PerovskiteLowHHI-v0 (see `latticegym envs`), or LatticeGym/Custom-v0 with --prior and --reward")
    p.add_argument("--agent", choices=["ppo", "grpo", "matinvent", "rwkl", "reinforce", "active", "prior", "pyxtal"], help="RL algorithm; 'matinvent' is MatInvent's released pipeline, 'rwkl' its update alone, 'grpo' group-relative PPO (OMatG-IRL's settings), 'active' evaluates only the samples a reward surrogate ranks best; floors: 'prior' samples without updating, 'pyxtal' samples random symmetric crystals (default: ppo)")
    p.add_argument("--prior", help="fine-tune this prior instead of the task's: a shipped prior's name, a .pt file, or a `pretrain` or `train` run directory")
    p.add_argument("--reward", help="LatticeGym/Custom-v0's reward: a registered name, module:attr naming a factory, or a YAML/JSON reward config")
    p.add_argument("--iterations", type=ROUNDS, help="RL iterations at most (default: 30)")
    p.add_argument("--batch-size", type=BATCH, help="E: the most crystals evaluated per iteration, from a pool of E x the agent's pool factor (default: the agent's, 64; matinvent 16)")
    p.add_argument("--budget", type=CRYSTALS, help="stop once this many property evaluations are spent (default: off)")
    p.add_argument("--screen", action=argparse.BooleanOptionalAction, default=None, help="evaluate only crystals that pass the screen: guards, unique, novel (with --reference), E_hull <= 0.1 eV/atom (default: on)")
    p.add_argument("--relax", action=argparse.BooleanOptionalAction, default=None, help="the screen relaxes each crystal with CHGNet (ASE FIRE) before E_hull; off: a single point (default: off)")
    p.add_argument("--hull-references", type=CRYSTALS, help="training crystals in the screen's MLIP hull (default: all of --reference)")
    p.add_argument("--steps", type=STEPS, help="reverse-diffusion steps T (default: 100)")
    p.add_argument("--correctors", type=CORRECTORS, help="Langevin corrector steps before each predictor step; episodes have steps x (1 + correctors) actions (default: 0)")
    p.add_argument("--seed", type=SEED, help="seed of sampling and updates (default: 0)")
    p.add_argument("--out", required=True, help="run directory: metrics.csv, tensorboard/, best.csv, evaluated.csv, checkpoint.pt, policy.pt")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt exactly with its settings; an option given must match them (--iterations may be raised)")
    p.add_argument("--wandb", nargs="?", const="offline", choices=["offline", "online"], help="also log to Weights & Biases (default mode: offline)")
    p.add_argument("--reference", dest="novelty_reference", metavar="CSV", help="CSV(.gz) of known crystals for novelty; the prior's own file means its training split (without it novelty is not computed)")
    p.add_argument("--diversity", choices=["default", "none", "composition", "structure"], help="diversity filter on the reward (default: the agent's recipe)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent option, parsed with the option's type, e.g. --set lr=1e-5 --set kl_coef=0.02")
    p.add_argument("--ray-address", help="evaluate costly properties on Ray actors: 'local' starts a cluster here, or a cluster address (default: in this process)")
    p.add_argument("--rollout-workers", type=WORKERS, help="Ray actors that sample the batch in parallel, each with a copy of the policy (default: 0)")
    p.add_argument("--evaluate", type=SAMPLES, default=0, metavar="N", help="also score N fresh samples of the prior before and the policy after (default: %(default)s, off)")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="run a task suite for several agents and seeds; tables and plots (resumes an interrupted sweep)")
    p.add_argument("--suite", default="quick", help="quick (CI-sized) or standard (default: %(default)s)")
    p.add_argument("--env", help="instead of a suite, these task ids (comma-separated), e.g. one you registered with --plugin")
    p.add_argument("--budget", type=CRYSTALS, default=1024, help="with --env: property evaluations per run (default: %(default)s)")
    p.add_argument("--batch-size", type=BATCH, default=64, help="with --env: crystals per iteration (default: %(default)s)")
    p.add_argument("--steps", type=STEPS, default=100, help="with --env: reverse-diffusion steps T (default: %(default)s)")
    p.add_argument("--hull-references", type=CRYSTALS, default=200, help="with --env: training crystals in the SUN hull (default: %(default)s)")
    p.add_argument("--policy-samples", type=CRYSTALS, default=128, help="with --env: fresh samples of each final policy scored apart from the budget (default: %(default)s)")
    p.add_argument("--agents", default="prior,pyxtal,matinvent,ppo,grpo,active", help="comma-separated agents or labels: floors 'prior' (no update) and 'pyxtal' (random symmetric crystals); 'matinvent' MatInvent's released pipeline, 'rwkl' its update alone and unscreened; 'grpo-chemeleon2'; active's grid 'active-pool', 'active-random', 'active-random-pool' (default: %(default)s)")
    p.add_argument("--seeds", type=SEEDS, default=3, help="seeds per task and agent (default: %(default)s)")
    p.add_argument("--only", help="run only these tasks of the suite, comma-separated names as in the table (e.g. PerovskiteLowHHI); the table still covers every task")
    p.add_argument("--out", required=True, help="sweep directory: runs/, results.csv, results.md, plots")
    p.add_argument("--data", help=f"folder with the priors' training CSVs, for novelty and the SUN hull (default: {DEFAULT_DATA} when present)")
    p.add_argument("--ray-address", help="evaluate costly properties on Ray actors: 'local' starts a cluster here, or a cluster address (default: in this process)")
    p.add_argument("--tabulate", action="store_true", help="run nothing: tabulate and plot the runs already finished in --out (a partial sweep's table)")
    p.add_argument("--merge", action="append", default=[], metavar="CSV", help="a results.csv of another sweep of this suite whose rows stand for the runs not finished in --out (repeatable; the plots show only the runs in --out)")
    _common(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .files import RunLockedError

    args = build_parser().parse_args(argv)
    set_threads(getattr(args, "threads", DEFAULT_THREADS))
    quiet_libraries(verbose=getattr(args, "verbose", False))
    if getattr(args, "device", "cpu") is None and args.command != "train":  # train takes a resumed run's device
        args.device = "cpu"
    try:
        load_plugins(args.plugin)
        return args.func(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = {
            "train": f"; {out} keeps its last checkpoint: add --resume to the same command to continue",
            "pretrain": f"; {out}/last.pt is the last checkpoint: add --resume to the same command to continue",
            "bench": "; run the same command again: finished runs are skipped and the interrupted one resumes",
        }.get(args.command, "")
        print(f"\nlatticegym {args.command}: interrupted{where}", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, ImportError, RunLockedError, FloatingPointError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"latticegym {args.command}: error: {text}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
