"""`spiffe-sidecar policy check|explain`: validate a policy offline, and say why a peer is allowed or not.

``check`` runs exactly the validation a live reload runs, so a file that
passes here is accepted by a running sidecar. ``explain`` evaluates with the
same evaluator the data path uses; with ``--config`` it resolves the
listener to its policy as the sidecar would (and, for an outbound listener,
tests the peer against ``expect``).

Exit codes: 0 = valid / allowed, 2 = invalid file or input (the code ``run``
gives the same error), 1 = ``check --strict`` found warnings, 3 = denied.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxy.errors import ConfigError, InvalidSpiffeIdError

EXIT_OK = 0
EXIT_WARNINGS = 1
EXIT_INVALID = 2  # as cli.main exits for any SidecarError, so run and policy agree on a bad file
EXIT_DENIED = 3


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``policy check`` and ``policy explain``."""
    p = sub.add_parser("policy", help="validate a policy file, explain a decision",
                       description="Validate policy files and explain authorization decisions.")
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    psub.required = True

    check = psub.add_parser("check", help="validate a policy file (or a sidecar config and its policy file)",
                            description="Validate like a live reload would; exit 0 when valid, 2 with "
                                        "file:line:field when not.")
    check.add_argument("file", nargs="?", help="policy.yaml")
    check.add_argument("-c", "--config", help="sidecar.yaml: check it, its policy file, and the references")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too (e.g. a shadowed allow)")
    check.set_defaults(func=run_check)

    explain = psub.add_parser("explain", help="show the decision for a peer on a listener, and why",
                              description="Exit 0 when allowed, 3 when denied, 2 on invalid input.")
    src = explain.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy-file", help="policy.yaml (then --listener names the policy)")
    src.add_argument("-c", "--config", help="sidecar.yaml (maps the listener to its policy)")
    explain.add_argument("--listener", required=True, help="listener name (or policy name with --policy-file)")
    explain.add_argument("--peer", required=True, help="the peer's SPIFFE ID")
    explain.add_argument("--method", help="decide an HTTP request with this method (default GET when --path is given)")
    explain.add_argument("--path", help="decide an HTTP request for this path (normalized as on the data path)")
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.set_defaults(func=run_explain)


def _fail(exc: Exception) -> int:
    print(f"spiffe-sidecar: error: {exc}", file=sys.stderr)
    return EXIT_INVALID


def run_check(args: argparse.Namespace) -> int:
    """``policy check``: print a summary of what was validated."""
    from proxy.config.load import load_sidecar
    from proxy.policy.load import load_policy_file

    if bool(args.file) == bool(args.config):
        return _fail(ValueError("give either a policy FILE or --config sidecar.yaml"))
    try:
        if args.config:
            config, policies = load_sidecar(args.config)
            print(f"{args.config}: OK: {len(config.inbound)} inbound, {len(config.outbound)} outbound listener(s)")
            if policies is None:
                print("  (no policy_file: no inbound listeners)")
                return EXIT_OK
        else:
            policies = load_policy_file(args.file)
    except ConfigError as exc:
        return _fail(exc)
    print(_summary(policies))
    from proxy.policy.lint import shadowed_allows

    warnings = [w for p in policies for w in shadowed_allows(p)]
    for w in warnings:
        print(f"warning: {w}")
    return EXIT_WARNINGS if warnings and args.strict else EXIT_OK


def _summary(policies: Any) -> str:
    from proxy.policy.model import RuleAction, RuleMode

    rules = [r for p in policies for r in p.rules]
    allow = sum(r.action is RuleAction.ALLOW for r in rules)
    audit = sum(r.mode is RuleMode.AUDIT for r in rules)
    n = len(policies.names())
    lines = [f"{policies.file}: OK: {n} polic{'y' if n == 1 else 'ies'}, {len(rules)} rule(s):"
             f" {allow} allow, {len(rules) - allow} deny ({audit} in audit mode)"]
    for policy in policies:
        if not policy.rules:
            lines.append(f"  {policy.name}: no rules (denies every peer)")
            continue
        lines.append(f"  {policy.name}:")
        for r in policy.rules:
            mode = ", audit" if r.mode is RuleMode.AUDIT else ""
            lines.append(f"    - {r.name} ({r.action.value}{mode}, line {r.line}): {r.peers.describe()}")
    return "\n".join(lines)


def run_explain(args: argparse.Namespace) -> int:
    """``policy explain``: print the decision, the rule and why."""
    from proxy.config.load import load_sidecar
    from proxy.policy.load import load_policy_file
    from proxy.spiffe.id import SpiffeId

    try:
        peer = SpiffeId.parse(args.peer)
        if args.policy_file:
            policies = load_policy_file(args.policy_file)
            policy_name = args.listener
        else:
            config, loaded = load_sidecar(args.config)
            outbound = {o.name: o for o in config.outbound}
            if args.listener in outbound:
                return _explain_expect(outbound[args.listener], peer, args.json)
            inbound = {i.name: i for i in config.inbound}
            if args.listener not in inbound or loaded is None:
                known = ", ".join(sorted([*inbound, *outbound])) or "none"
                return _fail(ValueError(f"no listener {args.listener!r} in {args.config} (listeners: {known})"))
            policies, policy_name = loaded, inbound[args.listener].policy
    except (ConfigError, InvalidSpiffeIdError) as exc:
        return _fail(exc)
    if args.method or args.path:
        from proxy.errors import HttpRequestError
        from proxy.http.explain import explain_request

        try:
            decision = explain_request(policies, policy_name, str(peer), args.method, args.path)
        except HttpRequestError as exc:
            return _fail(ValueError(f"path {args.path!r} is refused before any policy (400): {exc.detail}"))
    else:
        decision = policies.evaluate(policy_name, peer)
    _print_decision(args.listener, policies.file, decision, args.json)
    return EXIT_OK if decision.allowed else EXIT_DENIED


def _print_decision(listener: str, file: str, decision: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"listener": listener, **decision.as_dict()}))
        return
    print(f"listener:  {listener} (policy {decision.policy!r} in {file})")
    print(f"peer:      {decision.peer}")
    if decision.request:
        print(f"request:   {decision.request}")
    print(f"decision:  {'ALLOW' if decision.allowed else 'DENY'}"
          + (f" (reason: {decision.reason.value})" if decision.reason else ""))
    print(f"rule:      {decision.rule} at {decision.where}" if decision.rule else "rule:      none (default deny)")
    if decision.pattern:
        print(f"matched:   {decision.pattern}")
    if decision.audit_denies:
        print(f"audit:     would be denied by {', '.join(decision.audit_denies)} (audit mode: not enforced)")
    print(f"why:       {decision.explanation}")


def _explain_expect(listener: Any, peer: Any, as_json: bool) -> int:
    ok = listener.expect.matches(peer)
    text = (f"outbound listener {listener.name!r} {'accepts' if ok else 'refuses'} upstream {peer}:"
            f" expect is {listener.expect.describe()}")
    if as_json:
        print(json.dumps({"listener": listener.name, "peer": str(peer), "allowed": ok,
                          "expect": list(listener.expect.patterns), "explanation": text}))
    else:
        print(text)
    return EXIT_OK if ok else EXIT_DENIED

