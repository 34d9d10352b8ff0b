"""The ``driftpilot`` command.

Its commands: ``demo``, ``replay``, ``scenarios export``, ``audit`` (``verify``, ``export``,
``show``), ``golden`` (``pin``, ``unpin``, ``list``), ``models`` (``register``), ``labels``
(``next``, ``answer``, ``skip``), ``corpus`` (``list``, ``search``, ``show``, ``relabel``,
``delete``, ``restore``, ``add``, ``import``, ``export``, ``snapshot``, ``snapshots``,
``diff``), ``token``
(``create``, ``revoke``, ``list``), ``serve``, ``run``, ``served``, ``rollback``, ``approvals``,
``approve``, ``deny``, ``chat`` and ``policy check``; ``driftpilot COMMAND --help`` says what each
takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace) -> Any:
    """The settings, with ``--home`` and ``--database-url`` over the environment's."""
    from driftpilot.config import Settings

    settings = Settings(home=Path(args.home)) if args.home else Settings()
    if args.database_url:
        settings.database_url = args.database_url
    return settings


def _sessions(args: argparse.Namespace) -> Any:
    """A session factory on ``--database-url``, else the settings' database under ``--home``."""
    from driftpilot.memory import db

    return db.connect(_settings(args).db_url)


def _epoch_bar(progress: Any) -> Any:
    """A callback drawing each training run as a bar of its epochs, with its latest losses."""
    task: list[Any] = []

    def on_epoch(point: dict[str, Any]) -> None:
        if point["epoch"] == 1:
            if task:
                progress.remove_task(task.pop())
            task.append(progress.add_task("training", total=point["max_epochs"]))
        val = "" if point.get("val_loss") is None else f", validation {point['val_loss']:.3f}"
        progress.update(
            task[0],
            completed=point["epoch"],
            description=f"training: epoch {point['epoch']}, loss {point['train_loss']:.3f}{val}",
        )

    return on_epoch


def _reporter(progress: Any, console: Any, description: str) -> Callable[[int, int], None]:
    """A callback for (done, total): a bar on a terminal; written to a file or a pipe (where a bar
    draws nothing until it ends), also a line at every tenth, so a log shows how far a run got."""
    task = progress.add_task(description, total=1)
    said = [-1]

    def report(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)
        tenth = done * 10 // total if total else 0
        if not console.is_terminal and tenth > said[0]:
            said[0] = tenth
            console.print(f"{description}: {done:,} of {total:,} ({tenth * 10}%)")

    return report


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from driftpilot.loop.demo import DemoConfig, run_demo

    console = Console()
    config = DemoConfig(
        out=Path(args.out),
        onts=args.onts,
        days=args.days,
        seed=args.seed,
        policy_path=Path(args.policy) if args.policy else None,
        # The demo keeps its own SQLite under --out unless a database is named explicitly.
        database_url=args.database_url,
        device=args.device,
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        result = run_demo(
            config,
            progress=_reporter(progress, console, "simulated time"),
            on_epoch=_epoch_bar(progress),
        )
    table = Table(title="Balanced accuracy per simulated day")
    for column in ("day", "never updated", "served", "offline share", "decisions"):
        table.add_column(column, justify="right" if column != "decisions" else "left")
    for row in result.daily.itertuples():
        table.add_row(str(row.day), f"{row.static:.3f}", f"{row.served:.3f}", f"{row.offline_share:.1%}", row.decisions)
    console.print(table)
    s = result.summary
    b = s["balanced_accuracy"]
    console.print(
        f"Never-updated model: {b['static_days_0_9']:.3f} (days 0-9) → {b['static_days_11_30']:.3f} (days 11-30), "
        f"a drop of {s.get('static_drop_points')} points.\n"
        f"Served by driftpilot: {b['served_days_0_9']:.3f} → {b['served_days_11_30']:.3f}, "
        f"a gap of {s.get('served_gap_points')} points.\n"
        f"{s['retrains']} retrains, {s['promotions']} promotions, {s['rollbacks']} rollbacks, "
        f"{len(s['outage_decisions'])} outage diagnoses (no retraining); {s['wall_seconds']} s.\n"
        f"Outputs in {result.out}: "
        + ", ".join(p.name for p in result.files.values())
        + f"\nInspect: driftpilot --home {result.out} audit | models"
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from driftpilot.loop.replay import ReplayConfig, run_replay

    settings = _settings(args)
    config = ReplayConfig(
        data=Path(args.data),
        target=args.target,
        out=Path(args.out),
        time_col=args.time_col,
        entity_col=args.entity_col,
        text_col=args.text_col,
        feature_cols=[c.strip() for c in args.feature_cols.split(",") if c.strip()] if args.feature_cols else None,
        slice_cols=[c.strip() for c in args.slice_cols.split(",") if c.strip()] if args.slice_cols else [],
        warmup=args.warmup,
        label_delay=args.label_delay,
        label_budget=args.label_budget,
        policy_path=Path(args.policy) if args.policy else None,
        seed=args.seed,
        baselines=tuple(b.strip() for b in args.baselines.split(",") if b.strip()),
        model=args.model,
        row_seconds=args.row_seconds,
        periodic_every=args.periodic_every,
        periodic_window=args.periodic_window,
        database_url=args.database_url,
        embedding_cache=settings.embedding_cache_dir,
        family=args.family,
        device=args.device,
    )
    console = Console()
    said: list[str] = []

    def warn(message: str) -> None:
        said.append(message)
        console.print(f"[bold yellow]warning:[/] {message}")

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        result = run_replay(
            config,
            progress=_reporter(progress, console, "rows"),
            encoding=_reporter(progress, console, "texts encoded") if args.text_col else None,
            on_epoch=_epoch_bar(progress),
            warn=warn,
        )
    s = result.summary
    table = Table(title=f"{s['model']}: {s['evaluated_rows']:,} rows replayed after {s['warmup']:,} of warm-up")
    for column in ("system", "accuracy", "macro-F1"):
        table.add_column(column, justify="left" if column == "system" else "right")
    for system, score in s["scores"].items():
        table.add_row(system, f"{score['accuracy']:.4f}", f"{score['macro_f1']:.4f}")
    console.print(table)
    labels = s["labels_revealed"]
    console.print(
        f"Labels revealed: {labels['feedback']:,} feedback + {labels['requested']:,} requested by the Curator "
        f"(budget {labels['budget']:,}). {s['retrains']} retrains, {s['releases']} canaries, "
        f"{s['promotions']} promotions, {s['rollbacks']} rollbacks. {s['wall_seconds']} s, "
        f"{s['rows_per_second']:,} rows/s ({s['rows_per_second_without_baselines']:,} without the baselines).\n"
        f"Checks: {s['checks']['healthy']:,} healthy, {s['checks']['blind']:,} blind, "
        f"{s['checks']['finding']:,} findings, {s['checks']['repeat']:,} repeats.\n"
        f"Outputs in {result.out}: " + ", ".join(p.name for p in result.files.values())
    )
    for message in s["warnings"]:
        if message not in said:  # those about the input were said before the replay started
            console.print(f"[bold yellow]warning:[/] {message}")
    return 0


def cmd_scenarios_export(args: argparse.Namespace) -> int:
    from driftpilot.loop.streams import export

    settings = _settings(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
    for entry in export(out, names, seed=args.seed, scale=args.scale, banking77_dir=settings.banking77_dir):
        print(f"{entry['file']:<24} {entry['rows']:>8,} rows  {entry['description']}")
        print(f"  (cd {out} && {entry['command']})")
    return 0


def _when(text: str | None, flag: str) -> Any:
    """The time a flag names; one without a zone is UTC, as memory and serving take it."""
    from datetime import datetime

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag} must be an ISO 8601 time such as 2026-03-12T08:00, got {text!r}") from None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from driftpilot.memory.audit import verify_chain

    with _sessions(args)() as session:
        report = verify_chain(session=session)
    if report.ok:
        print(f"chain intact: {report.checked} decisions, every hash recomputed and linked")
        return 0
    print(f"chain BROKEN at decision {report.first_broken_id}: {report.reason}")
    return 1


_EXPORT_COLUMNS = ("id", "time", "model_id", "run_id", "agent", "action", "outcome", "rationale")


def cmd_audit_export(args: argparse.Namespace) -> int:
    import csv

    from driftpilot.memory import decisions, managed

    with _sessions(args)() as session:
        model_id = managed.get_model(session=session, name=args.filter_model).id if args.filter_model else None
        rows = [
            decisions.decision_as_dict(d)
            for d in decisions.list_decisions(
                session=session,
                model_id=model_id,
                agent=args.agent,
                action=args.action,
                outcome=args.outcome,
                since=_when(args.since, "--since"),
                until=_when(args.until, "--until"),
            )
        ]
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        if args.format == "jsonl":
            for row in rows:
                out.write(json.dumps(row, default=str) + "\n")
        else:
            # The flat columns first; the structured fields as JSON text, so that nothing is lost.
            rest = [k for k in (rows[0] if rows else {}) if k not in _EXPORT_COLUMNS]
            writer = csv.DictWriter(out, fieldnames=[*_EXPORT_COLUMNS, *rest])
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: json.dumps(v, default=str) if isinstance(v, dict | list) else v for k, v in row.items()}
                )
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out:
        print(f"{len(rows)} decisions written to {args.out}", file=sys.stderr)
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    from driftpilot.memory import decisions
    from driftpilot.memory.tables import Decision

    with _sessions(args)() as session:
        found = session.get(Decision, args.id)
        if found is None:
            raise LookupError(f"no decision #{args.id} in the log")
        d = decisions.decision_as_dict(found)
    lines = [
        f"Decision #{d['id']} at {d['time']} (model {d['model_id']}, run {d['run_id']})",
        f"  {d['agent']} → {d['action']}: {d['outcome']}",
        "",
        f"  Why: {d['rationale']}",
        "",
        f"  Trigger: {json.dumps(d['trigger'], default=str)}",
    ]
    for verdict in d["policy_verdicts"] or []:
        state = "allowed" if verdict.get("allowed") else "refused"
        approval = ", needs a person's approval" if verdict.get("needs_approval") else ""
        lines.append(f"  Policy on '{verdict.get('action')}': {state}{approval}")
        for rule in verdict.get("verdicts", []):
            lines.append(f"    [{'pass' if rule['passed'] else 'FAIL'}] {rule['rule']}: {rule['reason']}")
    if d["evidence"]:
        lines.append("  Evidence:")
        lines += [f"    {k}: {json.dumps(v, default=str)}" for k, v in d["evidence"].items()]
    if d["diagnosis"]:
        lines.append(f"  Diagnosis: {json.dumps(d['diagnosis'], default=str)}")
    if d["approvals"]:
        lines.append(f"  Approvals: {json.dumps(d['approvals'], default=str)}")
    lines.append(f"  Hash {d['hash']} (previous {d['prev_hash'] or '-'})")
    print("\n".join(lines))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from driftpilot.memory import decisions, managed

    sessions = _sessions(args)
    with sessions() as session:
        model_id = managed.get_model(session=session, name=args.model).id if args.model else None
        rows = [decisions.decision_as_dict(d) for d in decisions.list_decisions(session=session, model_id=model_id)]
    if not args.all:
        rows = [r for r in rows if r["action"] != "check" or r["outcome"] != "healthy"]
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    for r in rows:
        print(f"#{r['id']} {r['time']} {r['agent']:<15} {r['action']:<14} {r['outcome']:<18} {r['rationale']}")
    return 0


def _event_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--events must be comma-separated event ids, got {text!r}") from None
    if not ids:
        raise ValueError("--events names no event id")
    return ids


def cmd_golden(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from driftpilot.memory import golden, managed

    ids = _event_ids(args.events) if args.golden_command in ("pin", "unpin") else []
    sessions = _sessions(args)
    with sessions() as session:
        model_id = managed.get_model(session=session, name=args.model).id
        if args.golden_command == "pin":
            now = datetime.now(UTC)
            added = golden.pin(session=session, model_id=model_id, event_ids=ids, time=now, note=args.note)
            pinned = golden.golden_ids(session=session, model_id=model_id)
            print(f"pinned {added} new events to the golden set of '{args.model}' ({len(pinned)} pinned in all)")
        elif args.golden_command == "unpin":
            removed = golden.unpin(session=session, model_id=model_id, event_ids=ids)
            pinned = golden.golden_ids(session=session, model_id=model_id)
            print(f"unpinned {removed} events from the golden set of '{args.model}' ({len(pinned)} pinned in all)")
        else:
            pinned = golden.golden_ids(session=session, model_id=model_id)
            listing = ": " + ",".join(map(str, pinned)) if pinned else ""
            print(f"{len(pinned)} events in the golden set of '{args.model}'{listing}")
    return 0


def cmd_models_register(args: argparse.Namespace) -> int:
    from driftpilot.loop.register import register_from_csv
    from driftpilot.loop.replay import ReplayConfig
    from driftpilot.models.registry import Registry

    settings = _settings(args)
    config = ReplayConfig(
        data=Path(args.data),
        target=args.target,
        time_col=args.time_col,
        entity_col=args.entity_col,
        text_col=args.text_col,
        feature_cols=args.feature_cols.split(",") if args.feature_cols else None,
        policy_path=Path(args.policy) if args.policy else None,
        family=args.family,
        database_url=settings.db_url,
        embedding_cache=settings.embedding_cache_dir,
    )
    done = register_from_csv(
        config,
        _sessions(args),
        Registry(settings.artifact_dir),
        name=args.name,
        home=settings.home,
        from_model=args.from_model,
    )
    print(
        f"registered {done['model']} ({done['family']}): version 1 trained on {done['rows']:,} labelled rows, "
        f"classes {', '.join(done['classes'])}; policy {done['policy']}"
    )
    print(f"features: {', '.join(done['features'])}")
    transfer = done.get("transfer")
    if transfer:
        print(
            f"from {transfer['from']}: "
            + ("chosen" if transfer.get("chosen") else "not chosen (a model trained from scratch scored higher)")
            + f"; shared features {', '.join(transfer['shared_features'])}"
            + (f"; new features {', '.join(transfer['new_features'])}" if transfer["new_features"] else "")
            + (f"; new classes {', '.join(transfer['new_classes'])}" if transfer["new_classes"] else "")
        )
    return 0


def _who(args: argparse.Namespace) -> str:
    """Who makes a change from the command line: ``--by``, else the login name."""
    import getpass

    return args.by or getpass.getuser()


def _text_rows(args: argparse.Namespace, session: Any, model: str, rows: list[Any]) -> list[Any]:
    """A text model's rows with their texts encoded (offline, cached), as the API encodes them."""
    from driftpilot.memory import managed
    from driftpilot.serving.texts import text_features

    schema = managed.model_schema(managed.get_model(session=session, name=model))
    return text_features(_settings(args).embedding_cache_dir).encode_rows(schema, rows)


def _print_item(row: dict[str, Any]) -> None:
    out = f" [out: {row['excluded']['kind']}: {row['excluded']['reason']}]" if row.get("excluded") else ""
    what = row.get("text") or f"{row['entity']} at {row['time']}"
    print(f"#{row['event_id']:<7} {row['label']:<16} ({row['source']}) {row['key']}: {what}{out}")


def cmd_labels(args: argparse.Namespace) -> int:
    from driftpilot.memory import corpus, managed

    with _sessions(args)() as session:
        if args.labels_command == "next":
            model_id = managed.get_model(session=session, name=args.model).id
            queue = corpus.label_queue(session=session, model_id=model_id, limit=args.limit)
            if args.json:
                print(json.dumps(queue))
                return 0
            for q in queue:
                what = q["text"] or json.dumps(q["features"])
                print(f"request {q['id']}: event {q['event_id']} ({q['key']}), served {q['prediction']}: {what}")
                print(f"  why asked: {q['reason']}")
            if not queue:
                print(f"no label requests open for '{args.model}'")
            return 0
        if args.labels_command == "answer":
            change = corpus.answer_request(
                session=session, model=args.model, request_id=args.request, value=args.label, by=_who(args)
            )
        else:
            change = corpus.skip_request(session=session, model=args.model, request_id=args.request, by=_who(args))
    print(change.message + (f" (decision #{change.decision_id})" if change.decision_id else ""))
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    from driftpilot.memory import corpus, managed

    verb = args.corpus_command
    with _sessions(args)() as session:
        model_id = managed.get_model(session=session, name=args.model).id
        if verb in ("list", "search"):
            rows = corpus.corpus_rows(
                session=session,
                model_id=model_id,
                label=args.label,
                source=args.source,
                search=args.text if verb == "search" else None,
                include_excluded=args.excluded,
                after_id=args.after,
                limit=args.limit,
            )
            if args.json:
                print(json.dumps(rows))
            for row in [] if args.json else rows:
                _print_item(row)
            return 0
        if verb == "show":
            print(json.dumps(corpus.corpus_item(session=session, model_id=model_id, event_id=args.event), indent=2))
            return 0
        if verb == "export":
            text = corpus.export_corpus(session=session, model_id=model_id, fmt=args.format)
            if args.out == "-":
                sys.stdout.write(text)
            else:
                Path(args.out).write_text(text, encoding="utf-8")
                print(f"wrote {len(text.splitlines()) - (args.format == 'csv')} items to {args.out}")
            return 0
        if verb == "snapshots":
            for snap in corpus.list_snapshots(session=session, model_id=model_id):
                made = f"{snap['kind']} by {snap['made_by']}"
                print(f"snapshot {snap['id']:<5} {snap['time']}  {snap['rows']:>7} items  {made}")
            return 0
        if verb == "diff":
            diff = corpus.diff_snapshots(session=session, a=args.a, b=args.b, limit=args.limit)
            if args.json:
                print(json.dumps(diff))
                return 0
            print(
                f"snapshot {args.a} -> {args.b}: {diff['added']} added, {diff['removed']} removed, "
                f"{diff['relabelled']} relabelled, {diff['unchanged']} unchanged"
            )
            for item in diff["relabelled_items"]:
                print(f"  ~ #{item['event_id']}: {item['from']} -> {item['to']}")
            for item in diff["added_items"]:
                print(f"  + #{item['event_id']}: {item['label']}")
            for item in diff["removed_items"]:
                print(f"  - #{item['event_id']}: {item['label']}")
            return 0
        if verb in ("clusters", "name-cluster"):
            return _expansion(args, session)
        change = _corpus_change(args, session, corpus)
    print(change.message + (f" (decision #{change.decision_id})" if change.decision_id else ""))
    return 0


def _expansion(args: argparse.Namespace, session: Any) -> int:
    """``corpus clusters`` (propose new intents) and ``corpus name-cluster`` (a person names one)."""
    from driftpilot.agents import expansion
    from driftpilot.models.registry import Registry

    registry = Registry(_settings(args).artifact_dir)
    if args.corpus_command == "name-cluster":
        change = expansion.name(
            session,
            registry,
            args.model,
            proposal=args.proposal,
            cluster=args.cluster,
            label=args.label,
            by=_who(args),
            k=args.around,
        )
        print(change.message + (f" (decision #{change.decision_id})" if change.decision_id else ""))
        return 0
    change, clusters = expansion.propose(session, registry, args.model, by=_who(args))
    if args.json:
        print(json.dumps({"proposal": change.decision_id, "clusters": clusters}))
        return 0
    print(f"proposal {change.decision_id}: {len(clusters)} clusters of queries the model does not know")
    for i, cluster in enumerate(clusters):
        print(f"  {i}: {cluster['suggested_name']!r}  {cluster['size']} queries, cohesion {cluster['cohesion']:.2f}")
        for example in cluster["examples"][:3]:
            print(f"       - {example}")
    if clusters:
        print(f"name one: driftpilot corpus name-cluster {args.model} {change.decision_id} CLUSTER NAME")
    return 0


def _corpus_change(args: argparse.Namespace, session: Any, corpus: Any) -> Any:
    """The changing verbs of ``corpus``: each attributed to ``--by`` (else the login name)."""
    verb, who = args.corpus_command, _who(args)
    if verb == "relabel":
        return corpus.relabel(session=session, model=args.model, event_id=args.event, value=args.label, by=who)
    if verb == "delete":
        return corpus.delete_items(
            session=session, model=args.model, event_ids=_event_ids(args.events), by=who, reason=args.reason
        )
    if verb == "restore":
        return corpus.restore_items(session=session, model=args.model, event_ids=_event_ids(args.events), by=who)
    if verb == "snapshot":
        return corpus.snapshot_corpus(session=session, model=args.model, by=who)
    if verb == "add":
        row: dict[str, Any] = {"key": args.key, "label": args.label}
        if args.text is not None:
            row["text"] = args.text
        if args.features is not None:
            try:
                row["features"] = json.loads(args.features)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--features must be a JSON object: {exc.msg}") from None
        rows = _text_rows(args, session, args.model, [row])
        return corpus.add_examples(session=session, model=args.model, rows=rows, by=who)
    # import
    from driftpilot.memory import managed

    path = Path(args.file)
    fmt = args.format or ("jsonl" if path.suffix in (".jsonl", ".ndjson") else "csv")
    schema = managed.model_schema(managed.get_model(session=session, name=args.model))
    rows, lines = corpus.parse_corpus_file(path.read_bytes(), fmt, schema)
    rows = _text_rows(args, session, args.model, rows)
    return corpus.add_examples(session=session, model=args.model, rows=rows, by=who, lines=lines)


def cmd_token(args: argparse.Namespace) -> int:
    from driftpilot.memory import tokens

    with _sessions(args)() as session:
        if args.token_command == "create":
            row, secret = tokens.create_token(session=session, name=args.name, role=args.role)
            print(f"token {row.name!r} with role {row.role}; keep it now, it is not shown again:")
            print(secret)
        elif args.token_command == "revoke":
            row = tokens.revoke_token(session=session, name=args.name)
            print(f"token {row.name!r} revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
        else:
            for row in tokens.list_tokens(session=session):
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "live"
                print(f"{row.name:<24} {row.role:<9} created {row.created_at:%Y-%m-%d %H:%M}  {state}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from driftpilot.api.serve import serve

    return serve(
        _settings(args),
        host=args.host,
        port=args.port,
        with_api=args.command == "serve",
        with_loop=args.command == "run" or not args.no_loop,
        policy_path=args.policy,
        tick=args.tick,
        lease_seconds=args.lease_seconds,
        workers=args.workers,
        fd=args.fd,
    )


def cmd_edge_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from driftpilot.edge.node import EdgeNode
    from driftpilot.edge.serve import Rounds, node_app

    node = EdgeNode(
        server=args.server,
        model=args.model,
        node_id=args.node_id,
        token=args.token,
        folder=args.folder or Path(f"edge-{args.node_id}"),
        group=args.group,
        defer=not args.no_defer,
    )
    rounds = Rounds(node, poll_seconds=args.poll_seconds, upload_seconds=args.upload_seconds)
    uvicorn.run(node_app(node, rounds), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_fl_start(args: argparse.Namespace) -> int:
    from driftpilot.loop.federation import start_federated_run

    settings = _settings(args)
    done = start_federated_run(
        _sessions(args),
        settings,
        model=args.model,
        superlink=args.superlink,
        rounds=args.rounds,
        strategy=args.strategy,
        min_nodes=args.min_nodes,
        policy_path=Path(args.policy) if args.policy else None,
    )
    for decision in done["decisions"]:
        print(f"#{decision['id']} {decision['agent']} {decision['action']}: {decision['outcome']}")
        print(f"    {decision['rationale']}")
    print(f"outcome: {done['outcome']}" + (f", candidate version {done['candidate']}" if done.get("candidate") else ""))
    return 0 if done["outcome"] not in ("training_failed", "retrain_denied") else 1


def cmd_models(args: argparse.Namespace) -> int:
    from driftpilot.memory import managed, versions

    sessions = _sessions(args)
    with sessions() as session:
        for model in managed.list_models(session=session):
            print(f"{model.name} ({model.task}, {model.family}, policy {model.policy})")
            for v in versions.list_versions(session=session, model_id=model.id):
                score = (v.metrics or {}).get("recent_balanced_accuracy")
                score_text = f"{score:.3f}" if isinstance(score, float) else "-"
                print(f"  v{v.number:<4} {v.stage:<12} {v.time.isoformat()}  holdout balanced accuracy {score_text}")
    return 0


def cmd_served(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from driftpilot.serving.routing import who_served

    at = _when(args.at, "--at") or datetime.now(UTC)
    with _sessions(args)() as session:
        answer = who_served(session, model=args.model, entity=args.entity, at=at, group=args.group)
    if args.json:
        print(json.dumps(answer.as_dict()))
    else:
        version = f"version {answer.version}" if answer.version is not None else "no version"
        print(f"{answer.entity} at {answer.at}: {version} ({answer.role}) since {answer.since}")
        print(f"  why: {answer.reason}" + (f" (decision #{answer.decision_id})" if answer.decision_id else ""))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from driftpilot.serving.rollback import manual_rollback

    sessions = _sessions(args)
    decision = manual_rollback(sessions, model=args.model, version=args.version, policy_path=args.policy, who=args.who)
    print(f"#{decision.id} {decision.outcome}: {decision.rationale}")
    return 0 if decision.outcome == "rolled_back" else 1


def cmd_approvals(args: argparse.Namespace) -> int:
    from driftpilot.memory import approvals, managed

    with _sessions(args)() as session:
        model_id = managed.get_model(session=session, name=args.model).id if args.model else None
        rows = approvals.list_approvals(session=session, model_id=model_id, status=None if args.all else "pending")
        for a in rows:
            answer = f" by {a.decided_by}" if a.decided_by else ""
            print(
                f"#{a.id} {a.status}{answer}: {a.action} {json.dumps(a.subject)} asked {a.requested_at:%Y-%m-%d %H:%M}"
            )
            print(f"  {a.reason}")
        if not rows:
            print("no approval requests" + ("" if args.all else " waiting"))
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from driftpilot.memory import approvals

    with _sessions(args)() as session:
        approval = approvals.decide_approval(
            session=session,
            approval_id=args.id,
            approve=args.command == "approve",
            by=args.by,
            at=datetime.now(UTC),
            comment=args.comment,
        )
        subject = json.dumps(approval.subject)
        print(f"#{approval.id} {approval.status} by {approval.decided_by}: {approval.action} {subject}")
    print("the waiting run acts on it when the loop next looks at it")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from driftpilot.agents.context import AgentContext
    from driftpilot.agents.llm import chat_model
    from driftpilot.agents.operator import operate
    from driftpilot.api.chat import execute_rollback
    from driftpilot.models.registry import Registry
    from driftpilot.policies import PolicyEngine, load_policy

    settings = _settings(args)  # the artifacts under --home, beside its database
    sessions = _sessions(args)
    engine = PolicyEngine(load_policy(args.policy))
    context = AgentContext(sessions=sessions, registry=Registry(settings.artifact_dir), policy=engine)
    now = datetime.now(UTC)
    reply = operate(context, args.model, args.message, now, chat_model(settings), who=args.who)
    print(reply.reply)
    for proposal in reply.proposals:
        print(f"  #{proposal.decision_id} {proposal.action} {json.dumps(proposal.arguments)}: {proposal.outcome}")
        for reason in proposal.reasons:
            print(f"    {reason}")
        if proposal.outcome == "accepted" and proposal.action == "rollback":
            done = execute_rollback(sessions, args.model, proposal.arguments.get("version"), args.policy, args.who, now)
            print(f"    executed: {done.get('error') or done.get('rationale')}")
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from driftpilot.policies import load_policy

    policy = load_policy(args.file)
    print(f"{args.file}: valid policy '{policy.name}', autonomy {policy.autonomy}")
    return 0


def _corpus_parsers(sub: Any) -> None:
    """``labels next|answer|skip`` and ``corpus list|search|show|relabel|delete|restore|add|
    import|export|snapshot|snapshots|diff``."""
    labels = sub.add_parser("labels", help="the label queue: events the Curator asks people to label, and why")
    labels_sub = labels.add_subparsers(dest="labels_command", required=True)
    nxt = labels_sub.add_parser("next", help="the open requests, oldest first, with why each was chosen")
    nxt.add_argument("model")
    nxt.add_argument("--limit", type=int, default=10)
    nxt.add_argument("--json", action="store_true")
    answer = labels_sub.add_parser("answer", help="answer a request with a label (a person's label)")
    answer.add_argument("model")
    answer.add_argument("request", type=int)
    answer.add_argument("label")
    skip = labels_sub.add_parser("skip", help="skip a request you cannot tell")
    skip.add_argument("model")
    skip.add_argument("request", type=int)
    for verb in (answer, skip):
        verb.add_argument("--by", help="who answers (default: your login name)")
    labels.set_defaults(func=cmd_labels)

    corpus = sub.add_parser(
        "corpus", help="a model's training corpus: list, search, correct, import, export, snapshots"
    )
    verbs = corpus.add_subparsers(dest="corpus_command", required=True)
    for name, what in (("list", "the items, by event id"), ("search", "items whose text, key or entity holds TEXT")):
        listing = verbs.add_parser(name, help=what)
        listing.add_argument("model")
        if name == "search":
            listing.add_argument("text")
        listing.add_argument("--label", help="only items with this label")
        listing.add_argument("--source", help="only labels from this source: person, oracle, system, pseudo")
        listing.add_argument("--excluded", action="store_true", help="items kept out of the corpus too, with why")
        listing.add_argument("--after", type=int, default=0, help="only event ids above this (the next page)")
        listing.add_argument("--limit", type=int, default=50)
        listing.add_argument("--json", action="store_true")
    show = verbs.add_parser("show", help="one item: its labels, requests, snapshots, and why it is out if it is")
    show.add_argument("model")
    show.add_argument("event", type=int)
    relabel = verbs.add_parser("relabel", help="label an item as a person (what training reads from now on)")
    relabel.add_argument("model")
    relabel.add_argument("event", type=int)
    relabel.add_argument("label")
    delete = verbs.add_parser("delete", help="take items out of the corpus (kept, restorable)")
    delete.add_argument("model")
    delete.add_argument("--events", required=True, help="comma-separated event ids")
    delete.add_argument("--reason", default="", help="why (recorded)")
    restore = verbs.add_parser("restore", help="bring items back into the corpus")
    restore.add_argument("model")
    restore.add_argument("--events", required=True, help="comma-separated event ids")
    add = verbs.add_parser("add", help="add one labelled example (a text model's as --text)")
    add.add_argument("model")
    add.add_argument("--key", required=True, help="the example's key (adding it again changes nothing)")
    add.add_argument("--label", required=True)
    add.add_argument("--text", help="a text model's text")
    add.add_argument("--features", help="a tabular model's features as a JSON object")
    imported = verbs.add_parser("import", help="add or relabel items from a CSV or JSON-lines file: all rows or none")
    imported.add_argument("model")
    imported.add_argument("file")
    imported.add_argument("--format", choices=("csv", "jsonl"), help="default: from the file's suffix")
    export = verbs.add_parser("export", help="the corpus as CSV or JSON lines (what import reads back)")
    export.add_argument("model")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--out", default="-", help="file to write (default: standard output)")
    snapshot = verbs.add_parser("snapshot", help="an immutable snapshot of the corpus as it is now")
    snapshot.add_argument("model")
    snaps = verbs.add_parser("snapshots", help="the model's snapshots (training and corpus ones)")
    snaps.add_argument("model")
    diff = verbs.add_parser("diff", help="items added, removed and relabelled between two snapshots")
    diff.add_argument("model")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    diff.add_argument("--limit", type=int, default=50, help="items listed of each kind")
    diff.add_argument("--json", action="store_true")
    clusters = verbs.add_parser(
        "clusters", help="a text model's recent queries it does not know, in clusters with suggested names"
    )
    clusters.add_argument("model")
    clusters.add_argument("--json", action="store_true")
    named = verbs.add_parser(
        "name-cluster", help="name a proposed cluster: a new intent, or an old one it merges into; asks labels near it"
    )
    named.add_argument("model")
    named.add_argument("proposal", type=int, help="the proposal's decision id (corpus clusters prints it)")
    named.add_argument("cluster", type=int, help="the cluster's number in the proposal")
    named.add_argument("label", help="the intent it becomes")
    named.add_argument("--around", type=int, default=20, help="unlabelled queries nearest it asked for labels")
    for verb in (relabel, delete, restore, add, imported, snapshot, clusters, named):
        verb.add_argument("--by", help="who makes the change (default: your login name)")
    corpus.set_defaults(func=cmd_corpus)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftpilot", description="Keep deployed models healthy.")
    parser.add_argument("--home", help="driftpilot's folder (database, artifacts); default ./.driftpilot")
    parser.add_argument(
        "--database-url", help="database URL; default SQLite under --home (env DRIFTPILOT_DATABASE_URL)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="30 simulated days of the ONT fleet through the whole loop")
    demo.add_argument("--out", default=".driftpilot/demo", help="output folder (the demo's own; wiped on each run)")
    demo.add_argument("--onts", type=int, default=400, help="fleet size (the simulator's full default is 2000)")
    demo.add_argument("--days", type=float, default=30)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--policy", help="policy YAML (default: the shipped default policy)")
    demo.add_argument("--device", default="cpu", help="where training runs: cpu, cuda, or auto (CUDA when present)")
    demo.set_defaults(func=cmd_demo)

    replay = sub.add_parser("replay", help="backtest the loop on a recorded stream, beside the alternatives")
    replay.add_argument("data", help="CSV file, one event a row, in time order (or with --time-col)")
    replay.add_argument("--target", required=True, help="the column holding the label")
    replay.add_argument("--time-col", help="column of event times (default: a row clock, --row-seconds apart)")
    replay.add_argument("--entity-col", help="column of entity ids (canary cohorts hash them; default: the row)")
    replay.add_argument("--text-col", help="column of text, encoded into sentence vectors (text classification)")
    replay.add_argument("--feature-cols", help="comma-separated features (default: all but target/time/entity/text)")
    replay.add_argument(
        "--slice-cols",
        help="comma-separated category features whose values slice errors and drift (a hardware model, a region); "
        "default: none",
    )
    replay.add_argument("--warmup", type=int, default=1000, help="first rows, labelled, that train version 1")
    replay.add_argument("--label-delay", type=int, default=0, help="rows after its event a label becomes visible")
    replay.add_argument("--label-budget", type=float, default=0.1, help="largest share of rows that reveal a label")
    replay.add_argument("--policy", help="policy YAML (default: the shipped default policy)")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument(
        "--baselines",
        default="static,periodic,river-arf,logistic",
        help="comma-separated, of static, periodic, river-arf, logistic; '' for none",
    )
    replay.add_argument("--model", help="managed model name (default: the file's name)")
    replay.add_argument("--row-seconds", type=float, default=10.0, help="row clock step without --time-col")
    replay.add_argument("--periodic-every", type=int, help="rows between periodic retrains (default: a tenth)")
    replay.add_argument("--periodic-window", type=int, default=2000, help="labels the periodic baseline learns from")
    replay.add_argument("--out", default=".driftpilot/replay", help="output folder (the replay's own; wiped)")
    replay.add_argument(
        "--family",
        help="model family: tabular_mlp, hashed_mlp or intent_mlp "
        "(default: intent_mlp with --text-col, else tabular_mlp)",
    )
    replay.add_argument("--device", default="cpu", help="where training runs: cpu, cuda, or auto (CUDA when present)")
    replay.set_defaults(func=cmd_replay)

    scenarios = sub.add_parser("scenarios", help="the shipped streams")
    scenarios_sub = scenarios.add_subparsers(dest="scenarios_command", required=True)
    export = scenarios_sub.add_parser("export", help="write the shipped streams as CSV files, ready to replay")
    export.add_argument("--out", default="streams", help="folder to write into")
    export.add_argument("--names", help="comma-separated stream names (default: all)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--scale", type=float, default=1.0, help="shrink (or grow) every stream's row count")
    export.set_defaults(func=cmd_scenarios_export)

    audit = sub.add_parser("audit", help="the decision log with each decision's rationale")
    audit.add_argument("--model")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.add_argument("--all", action="store_true", help="include healthy routine checks")
    audit.set_defaults(func=cmd_audit)
    audit_sub = audit.add_subparsers(dest="audit_command", required=False)
    verify = audit_sub.add_parser("verify", help="prove the hash chain intact, or name the first broken link")
    verify.set_defaults(func=cmd_audit_verify)
    export = audit_sub.add_parser("export", help="the decisions as JSON lines or CSV, filtered")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--model", dest="filter_model")
    export.add_argument("--agent")
    export.add_argument("--action")
    export.add_argument("--outcome")
    export.add_argument("--since", help="ISO 8601 time, inclusive (UTC unless it says otherwise)")
    export.add_argument("--until", help="ISO 8601 time, exclusive")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.set_defaults(func=cmd_audit_export)
    show = audit_sub.add_parser("show", help="one decision as a person would read it")
    show.add_argument("id", type=int)
    show.set_defaults(func=cmd_audit_show)

    golden_cmd = sub.add_parser("golden", help="the golden set: events every candidate is scored on")
    golden_sub = golden_cmd.add_subparsers(dest="golden_command", required=True)
    pin = golden_sub.add_parser("pin", help="pin events to a model's golden set (pinning again changes nothing)")
    pin.add_argument("--model", required=True)
    pin.add_argument("--events", required=True, help="comma-separated event ids, e.g. 1,2,3")
    pin.add_argument("--note", default="", help="why these events must never get worse (recorded)")
    unpin = golden_sub.add_parser("unpin", help="take events out of a model's golden set")
    unpin.add_argument("--model", required=True)
    unpin.add_argument("--events", required=True, help="comma-separated event ids, e.g. 1,2,3")
    listing = golden_sub.add_parser("list", help="the event ids in a model's golden set")
    listing.add_argument("--model", required=True)
    golden_cmd.set_defaults(func=cmd_golden)

    models = sub.add_parser("models", help="managed models, their versions and stages")
    models.set_defaults(func=cmd_models)
    models_sub = models.add_subparsers(dest="models_command", required=False)
    register = models_sub.add_parser("register", help="bring your own model: train version 1 from labelled history")
    register.add_argument("name", help="the managed model's name, as the API's routes take it")
    register.add_argument("--data", required=True, help="CSV of labelled history, one event a row")
    register.add_argument("--target", required=True, help="the column holding the label")
    register.add_argument(
        "--family", help="tabular_mlp (the default), hashed_mlp, or intent_mlp (the default with --text-col)"
    )
    register.add_argument(
        "--text-col", help="column of text: events then carry it as a feature, encoded into sentence vectors"
    )
    register.add_argument("--time-col", help="column of event times (default: a row clock)")
    register.add_argument("--entity-col", help="column of entity ids (canary cohorts hash them)")
    register.add_argument("--feature-cols", help="comma-separated features (default: all but target/time/entity)")
    register.add_argument("--policy", help="the model's policy YAML (default: the service's, else the shipped one)")
    register.add_argument(
        "--from",
        dest="from_model",
        metavar="OTHER",
        help="a related managed model (another region or device line) whose champion's weights version 1 may "
        "start from: shared features mapped, new ones at zero, classes remapped (the newest fifth chooses)",
    )
    register.set_defaults(func=cmd_models_register)

    _corpus_parsers(sub)

    token = sub.add_parser("token", help="API tokens by role: ingest, operator, auditor, admin")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="a new token; printed alone on the last line, once")
    create.add_argument("--role", required=True, choices=["ingest", "operator", "auditor", "admin"])
    create.add_argument("--name", required=True, help="who holds it: the decision log names actors by it")
    revoke = token_sub.add_parser("revoke", help="refuse a token from its next request on")
    revoke.add_argument("name")
    token_sub.add_parser("list", help="every token's name, role and state (never the secret)")
    token.set_defaults(func=cmd_token)

    for verb, what in (
        ("serve", "the HTTP API (uvicorn), with the background loop unless --no-loop"),
        ("run", "the background loop alone (and the live sources), no HTTP"),
    ):
        service = sub.add_parser(verb, help=what)
        service.add_argument("--host", default="127.0.0.1")
        service.add_argument("--port", type=int, default=8000)
        service.add_argument("--policy", help="policy YAML for models registered without one")
        service.add_argument("--tick", type=float, default=5.0, help="seconds between the loop's passes")
        service.add_argument(
            "--lease-seconds",
            type=float,
            default=120.0,
            help="how long a model stays with this loop without renewal (another loop takes it over after)",
        )
        if verb == "serve":
            service.add_argument("--no-loop", action="store_true", help="an API-only worker")
            service.add_argument(
                "--workers",
                type=int,
                default=1,
                help="processes answering HTTP on the one port (PostgreSQL: 2 on 2 cores; SQLite: keep 1)",
            )
            service.add_argument(
                "--fd", type=int, help="serve on this inherited listening socket (how --workers starts its processes)"
            )
        service.set_defaults(func=cmd_serve, no_loop=False, workers=1, fd=None)

    edge = sub.add_parser("edge", help="run an edge node: the assigned student served with onnxruntime")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True)
    node = edge_sub.add_parser(
        "serve", help="serve the version the node's cohort is assigned, keep every answer until the server has it"
    )
    node.add_argument("--server", required=True, help="the driftpilot server's base URL")
    node.add_argument("--node-id", required=True, help="the node's id: the entity the server assigns versions by")
    node.add_argument("--token", required=True, help="a bearer token of the ingest role")
    node.add_argument("--model", default="ont-offline", help="the managed model (default: ont-offline)")
    node.add_argument("--group", help="the node's group (a canary by group reaches every node in it)")
    node.add_argument("--folder", type=Path, help="the node's own disk (default: ./edge-<node-id>)")
    node.add_argument("--host", default="127.0.0.1")
    node.add_argument("--port", type=int, default=8081)
    node.add_argument("--poll-seconds", type=float, default=30.0, help="how often to take the assignment")
    node.add_argument("--upload-seconds", type=float, default=5.0, help="how often to send the outbox")
    node.add_argument("--no-defer", action="store_true", help="answer everything with the student (no cascade)")
    node.set_defaults(func=cmd_edge_serve)

    fl = sub.add_parser("fl", help="federated training with Flower: the edge nodes train, only weights travel")
    fl_sub = fl.add_subparsers(dest="fl_command", required=True)
    fl_start = fl_sub.add_parser(
        "start",
        help="train MODEL's champion over a SuperLink's nodes; the Trainer gates the candidate and the "
        "Release Manager releases it like any other",
    )
    fl_start.add_argument("model", help="the managed model")
    fl_start.add_argument(
        "--superlink", help="the SuperLink's Control API, host:port (default: the policy's federated.superlink)"
    )
    fl_start.add_argument("--rounds", type=int, help="rounds of this run (default: the policy's federated.rounds)")
    fl_start.add_argument(
        "--strategy",
        choices=["auto", "fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum"],
        help="how updates are combined (default: the policy's federated.strategy)",
    )
    fl_start.add_argument(
        "--min-nodes", type=int, help="fewest nodes the run waits for (default: the policy's federated.min_nodes)"
    )
    fl_start.add_argument("--policy", help="the policy YAML (default: the model's own, else the shipped one)")
    fl_start.set_defaults(func=cmd_fl_start)

    served = sub.add_parser("served", help="which version served an entity at a time, and why")
    served.add_argument("model")
    served.add_argument("entity")
    served.add_argument("--at", help="ISO 8601 time (UTC unless it says otherwise); default now")
    served.add_argument("--group", help="the entity's group, for group cohorts (default: from its events)")
    served.add_argument("--json", action="store_true")
    served.set_defaults(func=cmd_served)

    rollback = sub.add_parser("rollback", help="serve an earlier version again (through the policy)")
    rollback.add_argument("model")
    rollback.add_argument(
        "version", type=int, nargs="?", help="default: stop the running release, else the previous champion"
    )
    rollback.add_argument("--policy")
    rollback.add_argument("--who", default="operator", help="who asks (recorded in the decision)")
    rollback.set_defaults(func=cmd_rollback)

    listing = sub.add_parser("approvals", help="approval requests waiting for a person (autonomy L3)")
    listing.add_argument("model", nargs="?")
    listing.add_argument("--all", action="store_true", help="answered and expired ones too")
    listing.set_defaults(func=cmd_approvals)
    for verb, what in (("approve", "let the action happen"), ("deny", "refuse the action")):
        decide = sub.add_parser(verb, help=f"answer an approval request: {what}")
        decide.add_argument("id", type=int)
        decide.add_argument("--by", required=True, help="who answers (recorded with the decision)")
        decide.add_argument("--comment", default="")
        decide.set_defaults(func=cmd_decide)

    chat = sub.add_parser("chat", help="ask the operator agent (a chat model when OPENAI_* is set, else commands)")
    chat.add_argument("model")
    chat.add_argument("message", help='e.g. "status", "rollback", "promote 3", "retrain", "label 200"')
    chat.add_argument("--policy", help="the model's policy file (default: the shipped one)")
    chat.add_argument("--who", default="operator", help="who asks (recorded in the decisions)")
    chat.set_defaults(func=cmd_chat)

    policy = sub.add_parser("policy", help="policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file; errors name the fields at fault")
    check.add_argument("file")
    check.set_defaults(func=cmd_policy_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (LookupError, ValueError, FileExistsError) as exc:
        print(f"driftpilot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
