"""What one index run did, counted by the stages as they go."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexReport:
    """What one `index` run did. `failed` lists files that failed in this run; `encoded` counts
    files whose content went through the model, `reused` those whose embedding was already stored;
    `offline` maps roots taken as unmounted (kept, not removed) to the reason."""

    model: str
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: int = 0
    encoded: int = 0
    reused: int = 0
    offline: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def model_work(self) -> bool:
        return self.encoded > 0

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.updated} updated"]
        if self.moved:
            parts.append(f"{self.moved} moved")
        parts += [f"{self.removed} removed", f"{self.unchanged} unchanged", f"{len(self.failed)} failed"]
        if self.pending:
            parts.append(f"{self.pending} pending")
        if self.offline:
            parts.append(f"{len(self.offline)} offline root{'s' * (len(self.offline) > 1)} kept")
        if self.dry_run:
            return f"would be: {', '.join(parts)} (dry run: nothing read or written)"
        work = f"{self.encoded} encoded, {self.reused} from cache" if self.model_work else "no model work needed"
        return f"{', '.join(parts)}; {work} ({self.seconds:.1f} s)"
