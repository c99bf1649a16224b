"""A third-party reward: the README's recipe, installed as its own package in the tests."""

from latticegym.rewards import CompositeReward, Guards, Objective, PropertySource, Target


class VolumePerAtom(PropertySource):
    name = "volume_per_atom"
    unit = "Å^3"

    def compute(self, structures):
        return [s.volume / len(s) for s in structures]


def make_reward(target: float = 15.0, width: float = 10.0):
    return CompositeReward([Objective(VolumePerAtom(), Target(target, width))], guards=Guards(min_elements=2))
