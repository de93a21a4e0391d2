"""Energy of a training run from board power, the facility's PUE and (optionally) the servers around the GPUs.

Boards are taken at their full rated power for the whole run: training keeps them near it,
so this is an upper bound on the GPUs' own draw. PUE (total facility power / IT power)
defaults to 1.2: Uptime Institute's 2024 Global Data Center Survey puts the industry average
at 1.56 and hyperscale operators report 1.08-1.10 fleet-wide (Google 2024 Environmental
Report: 1.10; Meta 2023 Sustainability Report: 1.08); 1.2 is a new liquid-cooled AI hall
between the two. `with_hosts` adds each server's CPUs, NICs, fans and switches by using the
server's maximum power per GPU instead of the board's (DGX datasheets).
"""

from __future__ import annotations

from dataclasses import dataclass

from hepta.scale.gpus import GPU

DEFAULT_PUE = 1.2


@dataclass(frozen=True)
class Energy:
    avg_power_mw: float  # boards x PUE
    energy_mwh: float
    avg_power_mw_with_hosts: float  # whole servers x PUE
    energy_mwh_with_hosts: float
    pue: float

    def as_dict(self) -> dict:
        return {"avg_power_mw": self.avg_power_mw, "energy_mwh": self.energy_mwh,
                "avg_power_mw_with_hosts": self.avg_power_mw_with_hosts,
                "energy_mwh_with_hosts": self.energy_mwh_with_hosts, "pue": self.pue}


def training_energy(gpu: GPU, gpus: int, hours: float, pue: float = DEFAULT_PUE) -> Energy:
    boards_mw = gpus * gpu.board_watts * pue / 1e6
    hosts_mw = gpus * gpu.system_watts_per_gpu * pue / 1e6
    return Energy(boards_mw, boards_mw * hours, hosts_mw, hosts_mw * hours, pue)
