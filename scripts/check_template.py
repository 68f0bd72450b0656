"""Checks the security contract of template.yaml that no linter knows about:

- the only principal able to read the Tailscale prune client's secret is
  prune-devices' role (IAM), and the secret's own resource policy denies
  everyone else;
- every function runs with its own role, attaches no managed policy, and has
  in its environment only the secret ARN its step needs;
- an Allow statement uses Resource "*" only for actions AWS offers no
  resource-level permissions for;
- the state machine may invoke exactly the four functions, and its
  DefinitionSubstitutions fill exactly the placeholders of
  infra/statemachine.asl.json.

Run with the Python that has cfn-lint (its decoder reads CloudFormation's
short tags): .tools/lint/bin/python scripts/check_template.py [template.yaml]
"""

import fnmatch
import json
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "template.yaml"
DEFINITION = ROOT / "infra" / "statemachine.asl.json"

FUNCTIONS = {
    "SyncTailscaleFunction": ("SyncTailscaleRole", "TAILSCALE_SECRET_ARN"),
    "SyncTinymdmFunction": ("SyncTinymdmRole", "TINYMDM_SECRET_ARN"),
    "PlanPruneFunction": ("PlanPruneRole", None),
    "PruneDevicesFunction": ("PruneDevicesRole", "TAILSCALE_PRUNE_SECRET_ARN"),
}
SECRET_VARS = {"TAILSCALE_SECRET_ARN", "TINYMDM_SECRET_ARN", "TAILSCALE_PRUNE_SECRET_ARN"}
# The prune client: the secret the stack creates, or the parameter naming an existing one.
PRUNE_SECRET_REFS = {"TailscalePruneSecret", "TailscalePruneSecretArn"}
# Actions without resource-level permissions, where AWS requires Resource "*".
STAR_ONLY_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}

failures = []


def fail(msg):
    failures.append(msg)


def as_list(v):
    return v if isinstance(v, list) else [v]


def refs(v):
    """Logical ids and parameters a value refers to (Ref, GetAtt, Sub)."""
    found = set()
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "Ref":
                found.add(x)
            elif k == "Fn::GetAtt":
                found.add(x[0] if isinstance(x, list) else x.split(".")[0])
            elif k == "Fn::Sub":
                text = x[0] if isinstance(x, list) else x
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                if isinstance(x, list):
                    found |= refs(x[1])
            else:
                found |= refs(x)
    elif isinstance(v, list):
        for x in v:
            found |= refs(x)
    return found


def grants(actions, wanted):
    return any(fnmatch.fnmatchcase(wanted.lower(), a.lower()) for a in actions)


def may_touch_prune_secret(resource):
    if isinstance(resource, str):
        return fnmatch.fnmatchcase("arn:aws:secretsmanager:us-east-1:1:secret:x", resource)
    return bool(refs(resource) & PRUNE_SECRET_REFS)


template, matches = decode(str(TEMPLATE))
if template is None:
    sys.exit(f"{TEMPLATE}: {matches}")
resources = template["Resources"]

# Every identity policy in the template, by the role (or SAM resource) it lands on.
statements = []  # (owner, statement)
for rid, res in resources.items():
    kind, props = res["Type"], res.get("Properties", {})
    if kind == "AWS::IAM::Role":
        if props.get("ManagedPolicyArns"):
            fail(f"{rid}: attaches managed policies {props['ManagedPolicyArns']}")
        for pol in props.get("Policies", []):
            statements += [(rid, s) for s in as_list(pol["PolicyDocument"]["Statement"])]
    elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        owners = sorted(refs(props.get("Roles", [])) | refs(props.get("Users", [])) | refs(props.get("Groups", [])))
        for s in as_list(props["PolicyDocument"]["Statement"]):
            statements += [(o, s) for o in owners or [rid]]
    elif kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
        if "Policies" in props or "Role" not in props:
            fail(f"{rid}: must use its own explicit Role, not SAM Policies or a generated role")

readers = set()
for owner, s in statements:
    if s.get("Effect") != "Allow":
        continue
    actions = as_list(s.get("Action", []))
    if "NotAction" in s or "NotResource" in s:
        fail(f"{owner}: NotAction/NotResource in {json.dumps(s, default=str)}")
        continue
    res_list = as_list(s.get("Resource", []))
    if grants(actions, "secretsmanager:GetSecretValue") and any(map(may_touch_prune_secret, res_list)):
        readers.add(owner)
    if "*" in res_list:
        wide = [a for a in actions if a not in STAR_ONLY_ACTIONS]
        if wide:
            fail(f"{owner}: Resource \"*\" for {wide}, which support resource-level permissions")
    if any("*" in a for a in actions):
        fail(f"{owner}: wildcard action in {actions}")

if readers != {"PruneDevicesRole"}:
    fail(f"principals able to read the prune secret: {sorted(readers)}, expected only PruneDevicesRole")

# The created prune secret also denies every other principal in its resource policy.
policies = [
    r for r in resources.values()
    if r["Type"] == "AWS::SecretsManager::ResourcePolicy"
    and refs(r["Properties"].get("SecretId")) & {"TailscalePruneSecret"}
]
if len(policies) != 1:
    fail("TailscalePruneSecret needs exactly one resource policy")
else:
    deny = [
        s for s in as_list(policies[0]["Properties"]["ResourcePolicy"]["Statement"])
        if s.get("Effect") == "Deny"
        and grants(as_list(s.get("Action", [])), "secretsmanager:GetSecretValue")
        and s.get("Principal") == "*"
    ]
    others = [refs(s.get("Condition", {}).get("StringNotEquals", {}).get("aws:PrincipalArn")) for s in deny]
    if others != [{"PruneDevicesRole"}]:
        fail(f"prune secret resource policy must deny GetSecretValue to all but PruneDevicesRole, has {others}")

# Each function: its own role, and only its own secret in the environment.
global_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
if SECRET_VARS & set(global_env):
    fail(f"Globals put secret ARNs into every function: {sorted(SECRET_VARS & set(global_env))}")
for fid, (role, secret_var) in FUNCTIONS.items():
    props = resources.get(fid, {}).get("Properties")
    if props is None:
        fail(f"{fid} is missing")
        continue
    if refs(props.get("Role")) != {role}:
        fail(f"{fid}: role should be {role}, is {props.get('Role')}")
    env = props.get("Environment", {}).get("Variables", {})
    held = SECRET_VARS & set(env)
    if held != ({secret_var} if secret_var else set()):
        fail(f"{fid}: secret variables {sorted(held)}, expected {secret_var or 'none'}")
    if secret_var == "TAILSCALE_PRUNE_SECRET_ARN" and refs(env[secret_var]) != PRUNE_SECRET_REFS:
        fail(f"{fid}: {secret_var} should be the prune secret, is {env[secret_var]}")

# The state machine: invokes exactly the four functions; substitutions match the definition.
sm = resources["StateMachine"]["Properties"]
invoked = set()
for owner, s in statements:
    if owner == "StateMachineRole" and grants(as_list(s.get("Action", [])), "lambda:InvokeFunction"):
        invoked |= refs(s.get("Resource"))
if invoked != set(FUNCTIONS):
    fail(f"StateMachineRole may invoke {sorted(invoked)}, expected {sorted(FUNCTIONS)}")
placeholders = set(re.findall(r"\$\{(\w+)\}", DEFINITION.read_text()))
substituted = set(sm.get("DefinitionSubstitutions", {}))
if placeholders != substituted:
    fail(f"{DEFINITION.name} placeholders {sorted(placeholders)} != DefinitionSubstitutions {sorted(substituted)}")
for key, value in sm.get("DefinitionSubstitutions", {}).items():
    expected = key.removesuffix("Arn")
    if refs(value) != {expected}:
        fail(f"DefinitionSubstitutions {key} should be {expected}'s ARN, is {value}")

if failures:
    print(f"{TEMPLATE.name}: {len(failures)} problem(s)", file=sys.stderr)
    for f in failures:
        print(f"  - {f}", file=sys.stderr)
    sys.exit(1)
print(f"{TEMPLATE.name}: prune secret readable only by PruneDevicesRole; roles, environments and state machine OK")
