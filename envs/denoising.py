"""The denoising MDP: one episode is one reverse-diffusion trajectory of T steps.

Observation: the noisy crystal in model space, padded to N_max, plus `t`, the steps left.
Action: the next, less noisy crystal (`types`, `frac`, `lattice`), same shapes as the state.
Reward: 0 until t reaches 0; then the final crystal is decoded and scored.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from pymatgen.core import Element

from ..options import check_count
from ..policies import DiffusionPolicy, DiffusionState, load_prior
from ..policies.checkpoint import available_priors
from ..rewards.composite import CompositeReward
from ..rewards.base import Reward, RewardResult
from ..rewards.registry import resolve as resolve_reward
from .tasks import FULL_REWARD, Task, check_success, get_task, meets

ACTION_FIELDS = ("types", "frac", "lattice")
# Finite, so spaces are check_env-clean and SB3 can clip to them, yet far beyond any denoising step
# (model-space states start as N(0, 1) noise); an action outside is rejected, never clipped.
BOUND = 1e4


def single_spaces(policy: DiffusionPolicy, num_steps: int) -> tuple[spaces.Dict, spaces.Dict]:
    """The observation and action spaces of one crystal for `policy` and an episode of `num_steps` actions."""
    n, k = policy.n_max, policy.num_types
    box = lambda shape: spaces.Box(-BOUND, BOUND, shape, np.float32)  # noqa: E731
    observation = spaces.Dict(
        {
            "types": box((n, k)),
            "frac": spaces.Box(0.0, 1.0, (n, 3), np.float32),
            "lattice": box((3, 3)),
            "mask": spaces.MultiBinary(n),
            "t": spaces.Discrete(num_steps + 1),
        }
    )
    # Fractional coordinates may leave [0, 1): the env wraps them.
    action = spaces.Dict({"types": box((n, k)), "frac": box((n, 3)), "lattice": box((3, 3))})
    return observation, action


def state_to_obs(state: DiffusionState, t: int) -> dict[str, np.ndarray]:
    """A batched observation dict (numpy) of `state` at `t` steps to go."""
    b = len(state)
    return {
        "types": state.types.detach().cpu().numpy().astype(np.float32),
        "frac": state.frac.detach().cpu().numpy().astype(np.float32),
        "lattice": state.lattice.detach().cpu().numpy().astype(np.float32),
        "mask": state.mask.cpu().numpy().astype(np.int8),
        "t": np.full(b, t, dtype=np.int64),
    }


def obs_to_state(obs: dict[str, np.ndarray], device: torch.device | str = "cpu") -> DiffusionState:
    """Batched observation -> model state (the agent's side of the MDP)."""
    as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)  # noqa: E731
    return DiffusionState(as_t(obs["types"]), as_t(obs["frac"]), as_t(obs["lattice"]), torch.as_tensor(np.asarray(obs["mask"]), device=device).bool())


def action_to_state(action: dict[str, np.ndarray], mask: torch.Tensor, batch_size: int, policy: DiffusionPolicy, batched: bool = True) -> DiffusionState:
    """Check an action and turn it into the next state: wrap coordinates, zero padding.

    The arrays carry a leading batch axis; `batched=False` reports shapes and indices without it.
    """
    cut = 0 if batched else 1
    if not isinstance(action, dict) or set(action) != set(ACTION_FIELDS):
        got = sorted(action) if isinstance(action, dict) else type(action).__name__
        raise ValueError(f"action must be a dict with keys {list(ACTION_FIELDS)}, got {got}")
    n, k = policy.n_max, policy.num_types
    expected = {"types": (batch_size, n, k), "frac": (batch_size, n, 3), "lattice": (batch_size, 3, 3)}
    arrays = {}
    for name in ACTION_FIELDS:
        raw = np.asarray(action[name])
        if raw.dtype.kind not in "biuf":  # complex parts would be dropped, strings and objects are not numbers
            raise ValueError(f"action[{name!r}] has dtype {raw.dtype}; expected real numbers")
        arr = raw.astype(np.float64)
        if arr.shape != expected[name]:
            raise ValueError(f"action[{name!r}] has shape {arr.shape[cut:]}, expected {expected[name][cut:]}")
        real = np.ones(arr.shape, dtype=bool) if name == "lattice" else np.broadcast_to(mask.cpu().numpy()[..., None], arr.shape)
        for bad, what in ((~np.isfinite(arr), "NaN or inf"), (np.abs(arr) > BOUND, f"values beyond ±{BOUND:g}")):
            bad &= real  # padding entries are ignored
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0][cut:])
                raise ValueError(f"action[{name!r}] contains {what} at index {where}")
        arrays[name] = torch.as_tensor(arr, dtype=torch.float32, device=mask.device)
    m = mask[..., None].float()
    types = torch.nan_to_num(arrays["types"]) * m
    frac = torch.remainder(torch.nan_to_num(arrays["frac"]), 1.0) * m
    return DiffusionState(types, frac, arrays["lattice"], mask)


def _check_held(state: DiffusionState, nxt: DiffusionState, batched: bool) -> None:
    """A corrector step moves only the coordinates: the action must pass types and lattice back unchanged."""
    for name in ("types", "lattice"):
        moved = ~torch.isclose(getattr(nxt, name), getattr(state, name), rtol=0.0, atol=1e-5)
        if moved.any():
            where = tuple(int(i) for i in torch.nonzero(moved)[0][0 if batched else 1 :])
            raise ValueError(f"action[{name!r}] changed at index {where} on a corrector step, which moves only 'frac'")


NO_RENDER_MODE = "render() draws nothing without a render mode: make the env with render_mode='ansi'"


def _resolve(task: str | Task | None, prior, reward, num_steps, device, correctors=None) -> tuple[Task | None, DiffusionPolicy, Reward, int]:
    task = get_task(task) if isinstance(task, str) else task
    if prior is None:
        if task is None:
            raise ValueError("give a task, or a prior (name, path or DiffusionPolicy) and a reward")
        prior = task.prior
    if reward is None:
        if task is None:
            raise ValueError("give a reward: a registered name, 'module:attr', a YAML file, or a callable taking a list of Structures")
        reward = task.make_reward()
    elif isinstance(reward, (str, Path)):
        reward = resolve_reward(reward)
    if not callable(reward):
        raise TypeError(f"reward must be a registered name, 'module:attr', a YAML file or callable on a list of Structures, got {type(reward).__name__}")
    if num_steps is None:  # a given policy keeps its own respacing; otherwise the task's
        num_steps = prior.num_steps if isinstance(prior, DiffusionPolicy) else (task.num_steps if task else 100)
    policy = prior if isinstance(prior, DiffusionPolicy) else load_prior(prior, num_steps=num_steps, device=device)
    policy.set_num_steps(num_steps, correctors)  # correctors None: the policy's own (0 for a loaded prior)
    check_chemistry(policy, reward, task.prior if task else None)
    return task, policy, reward, num_steps


def check_chemistry(policy: DiffusionPolicy, reward, task_prior: str | None = None) -> None:
    """Refuse a prior whose elements can never pass the reward's chemistry guards; warn when it is not the task's own."""
    elements = {Element.from_Z(z).symbol for z in policy.spec.elements}
    name = policy.spec.name or "this prior"
    guards = reward.guards if isinstance(reward, CompositeReward) else None
    if guards is not None and guards.anions and not elements & set(guards.anions[0]):
        raise ValueError(f"{name} generates none of the anions {', '.join(guards.anions[0])} that this task's guards require (its elements: {', '.join(sorted(elements))})")
    if guards is not None and (guards.min_elements or 0) > len(elements):
        raise ValueError(f"{name} knows {len(elements)} element(s) ({', '.join(sorted(elements))}); this task's guards need at least {guards.min_elements}")
    if task_prior and policy.spec.name and Path(task_prior).name != policy.spec.name and task_prior in available_priors():
        warnings.warn(f"fine-tuning {policy.spec.name} on a task made for {task_prior}: the guards and targets come from {task_prior}'s chemistry", stacklevel=3)


def checked_result(result, n: int) -> RewardResult:
    """`result` if it is a RewardResult with one finite-or-NaN float value per crystal; otherwise a ValueError saying what the reward returned."""
    if not isinstance(result, RewardResult):
        raise ValueError(f"the reward returned {type(result).__name__}, not a RewardResult")
    if len(result.values) != n or len(result.ok) != n or len(result.reasons) != n:
        raise ValueError(f"the reward returned {len(result.values)} values, {len(result.ok)} ok flags and {len(result.reasons)} reasons for {n} crystals")
    if np.isinf(result.values).any():
        raise ValueError(f"the reward returned an infinite value for crystal {int(np.argmax(np.isinf(result.values)))}")
    return result


class CrystalDenoisingVectorEnv(VectorEnv):
    """B crystals denoised in lockstep, scored in one reward call at t = 0 (the agents' fast path).

    Spaces are the single env's with a leading batch axis. Autoreset is next-step: the call after
    the final step resets every crystal and ignores its action. The final step's `info` holds, besides
    each crystal's entries, the whole batch's `reward_result` (a `RewardResult`).

    Args:
        num_envs: crystals denoised in lockstep (>= 1).
        task: as for `CrystalDenoisingEnv`.
        prior: as for `CrystalDenoisingEnv`.
        reward: as for `CrystalDenoisingEnv`.
        num_steps: as for `CrystalDenoisingEnv`.
        render_mode: None or "ansi" (one text line per crystal).
        device: torch device of the policy.
        correctors: as for `CrystalDenoisingEnv`.
        success: as for `CrystalDenoisingEnv`.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 8,
        task: str | Task | None = None,
        prior: str | DiffusionPolicy | None = None,
        reward: Reward | str | None = None,
        num_steps: int | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        correctors: int | None = None,
        success: tuple | None = None,
    ):
        check_count("num_envs", num_envs, 1, required=True)
        check_count("num_steps", num_steps, 1)
        check_count("correctors", correctors, 0)
        self.task, self.policy, self.reward, self.num_steps = _resolve(task, prior, reward, num_steps, device, correctors)
        self.success = check_success(success) if success is not None else (self.task.success if self.task else FULL_REWARD)
        self.episode_length = self.policy.episode_length
        self.num_envs = num_envs
        self.t = 0
        self.state: DiffusionState | None = None
        self.single_observation_space, self.single_action_space = single_spaces(self.policy, self.episode_length)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = render_mode
        self._needs_reset = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._needs_reset = False
        return self._reset_core(self.np_random, options), {}

    def step(self, actions):
        if self._needs_reset:
            obs, _ = self.reset()
            zeros = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs), zeros, zeros, {}
        obs, rewards, terminated, infos, result = self._step_core(actions)
        self._needs_reset = bool(terminated.all())
        info = self._merge(infos)
        if result is not None:
            info["reward_result"] = result
        return obs, rewards, terminated, np.zeros(self.num_envs, dtype=bool), info

    def _merge(self, infos: list[dict]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for i, info in enumerate(infos):
            merged = self._add_info(merged, info, i)
        return merged

    def _reset_core(self, rng: np.random.Generator, options: dict | None) -> dict[str, np.ndarray]:
        options = options or {}
        generator = torch.Generator(device=self.policy.device).manual_seed(int(rng.integers(2**62)))
        num_atoms = options.get("num_atoms")
        if num_atoms is not None:
            given = np.asarray(num_atoms)
            if given.dtype.kind not in "iu" or given.ndim > 1 or given.size not in (1, self.num_envs):
                raise ValueError(f"options['num_atoms'] must be an integer or {self.num_envs} integers, got {num_atoms!r}")
            num_atoms = torch.as_tensor(np.broadcast_to(given, (self.num_envs,)).copy(), device=self.policy.device)
            if num_atoms.min() < 1 or num_atoms.max() > self.policy.n_max:
                raise ValueError(f"num_atoms must be in 1..{self.policy.n_max}, got {num_atoms.tolist()}")
        self.state = self.policy.initial_state(self.num_envs, generator, num_atoms)
        self.t = self.episode_length
        return state_to_obs(self.state, self.t)

    def _step_core(self, action, batched: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict], RewardResult | None]:
        """One lockstep action: observations, rewards, terminations, each crystal's info, and the batch's RewardResult at the end (else None)."""
        if self.state is None or self.t == 0:
            raise RuntimeError("call reset() before step(): the episode has ended")
        nxt = action_to_state(action, self.state.mask, self.num_envs, self.policy, batched)
        if bool(self.policy.phase(self.t)[1]):
            _check_held(self.state, nxt, batched)
        self.state = nxt
        self.t -= 1
        rewards = np.zeros(self.num_envs)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        result = None
        if self.t == 0:
            structures = self.policy.decode(self.state).to_structures()
            result = checked_result(self.reward(structures), len(structures))
            rewards = np.asarray(result.values, dtype=float)
            for i, s in enumerate(structures):
                infos[i] = {"structure": s, **result.info(i), "success": meets(self.success, result, i)}
        terminated = np.full(self.num_envs, self.t == 0)
        return state_to_obs(self.state, self.t), rewards, terminated, infos, result

    def _next_kind(self) -> str:
        return "end" if self.t == 0 else ("corrector" if bool(self.policy.phase(self.t)[1]) else "predictor")

    def _ansi(self, i: int = 0) -> str:
        if self.state is None:
            return "not reset\n"
        s = self.policy.decode(self.state.index(slice(i, i + 1))).structure(0)
        a, b, c = s.lattice.abc
        alpha, beta, gamma = s.lattice.angles
        return (
            f"step {self.episode_length - self.t}/{self.episode_length} (t={self.t}, next: {self._next_kind()})  {s.composition.reduced_formula} ({len(s)} atoms)\n"
            f"  a={a:.3f} b={b:.3f} c={c:.3f} Å  alpha={alpha:.1f} beta={beta:.1f} gamma={gamma:.1f}\n"
        )

    def render(self):
        if self.render_mode == "ansi":
            return "".join(self._ansi(i) for i in range(self.num_envs))
        gym.logger.warn(NO_RENDER_MODE)
        return None


class CrystalDenoisingEnv(gym.Env):
    """One crystal per episode: T reverse-diffusion steps, the reward on the final crystal.

    It is the vector env with one crystal (`vector`), without autoreset; its attributes (`policy`,
    `task`, `reward`, `t`, `state`, ...) are the vector env's.

    Observation: Dict of `types` (N_max, K) atom-type channels, `frac` (N_max, 3) fractional
    coordinates, `lattice` (3, 3) lattice rows in units of the prior's lattice scale, `mask`
    (N_max,) real atoms, and `t`, the number of actions still to take (T(1 + C) at reset, 0 at the
    end; with no correctors, the reverse steps to go). Action: the next, less noisy state as `types`, `frac`, `lattice`. The reward is 0 until
    the last step; then `info` carries the `structure`, its `properties`, reward `components`,
    `success` and a `reason` when the crystal could not be scored.
    `latticegym.agents.PriorAgent(env.unwrapped.policy).act(obs)` gives the pretrained policy's action.

    Args:
        task: a registered task (name like "PerovskiteLowHHI" or a `Task`); gives the default prior,
            reward and T. Optional when `prior` and `reward` are given (`LatticeGym/Custom-v0`).
        prior: a shipped prior name ("perov_5", "carbon_24"), a checkpoint path or a
            `DiffusionPolicy`; it samples x_T and decodes crystals (`env.unwrapped.policy`).
        reward: a registered reward name, "module:attr", a YAML/JSON reward config, or any callable
            taking a list of pymatgen Structures and returning a `RewardResult` (default: the task's reward).
        num_steps: reverse-diffusion steps T per episode (default: the task's, or the given
            policy's own respacing).
        render_mode: None or "ansi" (a text line per crystal: step, formula, lattice).
        device: torch device of the policy ("cpu", "cuda").
        correctors: Langevin corrector steps before each predictor step (default: the given
            policy's own, else 0). An episode then has T(1 + C) actions, and `t` counts them down:
            `env.unwrapped.policy.phase(t)` says whether the next action is a corrector step,
            which moves only the coordinates (types and lattice must be passed back unchanged).
        success: (property or "reward", "<=" | ">=" | "in", value) conditions behind `info["success"]`
            (default: the task's; without a task, the reward at its maximum, 1).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        task: str | Task | None = None,
        prior: str | DiffusionPolicy | None = None,
        reward: Reward | str | None = None,
        num_steps: int | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        correctors: int | None = None,
        success: tuple | None = None,
    ):
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.vector = CrystalDenoisingVectorEnv(1, task, prior, reward, num_steps, render_mode, device, correctors, success)
        self.observation_space, self.action_space = self.vector.single_observation_space, self.vector.single_action_space
        self.render_mode = render_mode

    def __getattr__(self, name: str):
        vector = self.__dict__.get("vector")
        if vector is None:
            raise AttributeError(name)
        return getattr(vector, name)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, _ = self.vector.reset(seed=seed, options=options)
        return {k: v[0] for k, v in obs.items()}, {}

    def step(self, action):
        batched = {k: np.asarray(v)[None] for k, v in action.items()} if isinstance(action, dict) else action
        obs, rewards, terminated, infos, result = self.vector._step_core(batched, batched=False)  # no autoreset: a finished episode refuses
        info = infos[0] if result is None else {**infos[0], "reward_result": result}
        return {k: v[0] for k, v in obs.items()}, float(rewards[0]), bool(terminated[0]), False, info

    def render(self):
        if self.render_mode == "ansi":
            return self.vector._ansi(0)
        gym.logger.warn(NO_RENDER_MODE)
        return None
