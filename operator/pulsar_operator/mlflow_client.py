"""The operator's typed, async view of the MLflow registry (`Registry` and, for a tracking
server, `registry_rest.RestRegistry` are sync): each call runs in a worker thread so the event
loop never blocks, and an outage arrives as RegistryUnavailable."""

from __future__ import annotations

import asyncio

from pulsar_core.registry import VersionInfo, VersionRegistry


class AsyncRegistry:
    def __init__(self, registry: VersionRegistry) -> None:
        self._registry = registry

    async def versions(self, name: str) -> list[VersionInfo]:
        return await asyncio.to_thread(self._registry.versions, name)

    async def get_alias(self, name: str) -> VersionInfo | None:
        return await asyncio.to_thread(self._registry.get_alias, name)

    async def get_version(self, name: str, version: str) -> VersionInfo:
        return await asyncio.to_thread(self._registry.get_version, name, version)

    async def set_alias(self, name: str, version: str) -> None:
        await asyncio.to_thread(self._registry.set_alias, name, version)
