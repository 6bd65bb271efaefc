"""`foylectl completion bash|zsh`: a completion script generated from the argument parser.

Generated, not written by hand, so a new flag or command completes without
anyone remembering to edit a script. Kinds complete after `get` and
`describe`; flags complete per command. zsh loads the bash script through
bashcompinit, as kubectl's users do with `source <(kubectl completion zsh)`.
"""

from __future__ import annotations

import argparse
import shlex

from controller.api.kinds import KINDS

_BASH = """\
# foylectl completion for bash: source <(foylectl completion bash)
_foylectl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="" word
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in -*) ;; *) cmd="$word"; break ;; esac
    done
    local words
    case "$cmd" in
{cases}
        *) words={top} ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _foylectl foylectl
"""

_ZSH_PRELUDE = """\
# foylectl completion for zsh: source <(foylectl completion zsh)
autoload -U +X bashcompinit && bashcompinit
"""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [opt for action in parser._actions for opt in action.option_strings]


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    kinds = sorted({name for info in KINDS for name in (info.plural, *info.short_names)})
    cases = []
    for name, sub in _subparsers(parser).items():
        words = _flags(sub) + list(_subparsers(sub))
        if name in ("get", "describe"):
            words += kinds
        cases.append(f"        {name}) words={shlex.quote(' '.join(words))} ;;")
    top = shlex.quote(" ".join([*_subparsers(parser), *_flags(parser)]))
    bash = _BASH.format(cases="\n".join(cases), top=top)
    return bash if shell == "bash" else _ZSH_PRELUDE + bash
