"""OpenAI-compatible fake inference server standing in for one GPU region.

Run one with ``python -m regions.simulator --region-id eu-frankfurt --port 9101``; start
several from Python with :class:`SimulatorFleet`, or in-process with :func:`create_app`.
"""

from regions.simulator.config import DEFAULT_MODELS, Behaviour, SimulatorConfig
from regions.simulator.fleet import SimulatorFleet, SimulatorSpec, SimulatorStartError, free_port
from regions.simulator.server import create_app
from regions.simulator.state import STATE_KEY, SimulatorState

__all__ = [
    "DEFAULT_MODELS",
    "STATE_KEY",
    "Behaviour",
    "SimulatorConfig",
    "SimulatorFleet",
    "SimulatorSpec",
    "SimulatorStartError",
    "SimulatorState",
    "create_app",
    "free_port",
]
