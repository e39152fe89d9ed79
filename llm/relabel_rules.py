"""Relabellers without an LLM: the LLM stage's candidates and apply rule, other ways to choose.

    python refine_llm.py relabel ML-100K --rule random-matched --out_dir dataset-relabel/random-matched

Does ReFINe's gain need an LLM, or would any rule that turns some 2/3-star ratings into positives
and the rest into confirmed negatives do? At scope `answered` every rule sees the same candidates as
the LLM (each answered user's 2 and 3 star rows; users without an answer keep theirs); at scope
`all` every user's 2 and 3 star rows are candidates. Every rule ends in the same apply rule
(llm.answers.apply_labels: 4.5 chosen, 0.5 the rest); only the choice differs. A rule is a
function (RelabelInput, options) -> a boolean mask over the train rows, read on the candidate rows
only; docs/relabel.md says what each one does and how to add one.
"""
from dataclasses import dataclass
from pathlib import Path

from llm.answers import candidate_rows, parse_answers, picked_by_title
from llm.data import ITEM_COL, RATING_COL, USER_COL, load_train, read_csv_checked, user_id
from utils import InputError


@dataclass
class RelabelInput:
    """train_original and the LLM's labels on it.

    candidates: the rows a relabel rewrites (llm_candidates at scope answered, every 2/3 row at
    scope all); llm_candidates: the rows the LLM labelled (its answered users' 2/3 rows);
    llm_picked: the rows the LLM chose (4.5), read on llm_candidates only; users: each row's user
    id as the LLM stage compares them (llm.data.user_id).
    """
    train: object          # pandas DataFrame, train_original as read
    candidates: object     # numpy bool (rows,)
    llm_picked: object     # numpy bool (rows,)
    users: list
    llm_candidates: object = None  # numpy bool (rows,); None: the candidates (scope answered)

    def __post_init__(self):
        if self.llm_candidates is None:
            self.llm_candidates = self.candidates


@dataclass
class RuleOptions:
    seed: int = 2024          # random-matched, collaborative
    epochs: int = 350         # collaborative
    threads: int = 1          # collaborative
    device: str = "cpu"       # collaborative
    data_dir: Path = None     # collaborative: the source splits
    name: str = None


# ----------------------------------------------------------------------------------------------
# The LLM's labels


def labels_from_answers(data_dir, name, path):
    """RelabelInput from an answers file or JSONL cache, read as the apply stage reads it."""
    train, joined = load_train(data_dir, name)
    liked = parse_answers(path)
    if not liked:
        raise InputError(f"{path} holds no parsable answer (no answer line starting with '['): no LLM labels")
    return RelabelInput(train, candidate_rows(train, liked), picked_by_title(train, joined["title"].to_numpy(), liked),
                        [user_id(u) for u in train[USER_COL].to_numpy()])


def labels_from_augment(train, path):
    """RelabelInput from an augment file made from `train` by the apply rule (the published one).

    Its answered users are those with a 0.5 or 4.5 row where train has a 2 or 3; the file must be
    what the apply rule makes: those users' every 2/3 row relabelled, all other rows unchanged.
    """
    import numpy as np

    augment = read_csv_checked(path, [USER_COL, ITEM_COL, RATING_COL])
    keys = [frame[[USER_COL, ITEM_COL]].astype(str).to_numpy() for frame in (train, augment)]
    if keys[0].shape != keys[1].shape or not (keys[0] == keys[1]).all():
        raise InputError(f"{path} does not list train_original's (user, item) rows in its order: give the "
                         f"augment file made from this train_original")
    before = train[RATING_COL].to_numpy(dtype=float)
    after = augment[RATING_COL].to_numpy(dtype=float)
    relabelled = np.isin(before, (2, 3)) & np.isin(after, (0.5, 4.5))
    users = [user_id(u) for u in train[USER_COL].to_numpy()]
    answered = {u for u, hit in zip(users, relabelled) if hit}
    candidates = candidate_rows(train, answered)
    odd = (candidates != relabelled) | (~candidates & (before != after))
    if odd.any():
        line = int(np.flatnonzero(odd)[0]) + 2
        raise InputError(f"{path}:{line}: rating {after[line - 2]:g} where train_original has "
                         f"{before[line - 2]:g}, which the apply rule does not make (it rewrites every 2/3 row "
                         f"of an answered user to 0.5 or 4.5 and nothing else)")
    return RelabelInput(train, candidates, candidates & (after == 4.5), users)


# ----------------------------------------------------------------------------------------------
# Rules


def top_n_per_user(data, scores, counts):
    """Boolean mask: each user's `counts[user]` candidate rows of highest score (ties: the earlier row)."""
    import numpy as np
    import pandas as pd

    rows = np.flatnonzero(data.candidates)
    frame = pd.DataFrame({"user": pd.factorize(pd.Series([data.users[r] for r in rows], dtype=object))[0],
                          "score": np.asarray(scores, dtype=float)[rows], "row": rows})
    frame = frame.sort_values(["user", "score", "row"], ascending=[True, False, True], kind="stable")
    rank = frame.groupby("user").cumcount().to_numpy()
    wanted = np.array([counts[data.users[r]] for r in frame["row"]])
    picked = np.zeros(len(data.candidates), dtype=bool)
    picked[frame["row"].to_numpy()[rank < wanted]] = True
    return picked


def llm_counts(data):
    """user -> how many candidate rows the LLM chose."""
    counts = {}
    for user, candidate, picked in zip(data.users, data.candidates, data.llm_picked):
        if candidate:
            counts[user] = counts.get(user, 0) + int(picked)
    return counts


def rule_llm(data, options):
    """The LLM's own choice (the check that this path reproduces the apply stage)."""
    return data.llm_picked.copy()


def rule_random_matched(data, options):
    """As many positives per user as the LLM chose, drawn at random: one uniform number per
    candidate row (numpy's default_rng(seed), rows in file order), each user's highest become 4.5."""
    import numpy as np

    scores = np.zeros(len(data.candidates))
    scores[data.candidates] = np.random.default_rng(options.seed).random(int(data.candidates.sum()))
    return top_n_per_user(data, scores, llm_counts(data))


def rule_user_mean(data, options):
    """A candidate is positive when its rating is at least the mean of its user's train ratings."""
    import pandas as pd

    ratings = data.train[RATING_COL].astype(float).reset_index(drop=True)
    # Codes, not the ids themselves: ids may mix numbers and text, which do not sort together.
    means = ratings.groupby(pd.factorize(pd.Series(data.users, dtype=object))[0]).transform("mean")
    return (ratings >= means).to_numpy()


def rule_star_threshold(data, options):
    """A 3 is a like, a 2 a dislike: the stars alone decide."""
    return (data.train[RATING_COL].astype(float) == 3).to_numpy()


def rule_llm_star_threshold(data, options):
    """The LLM's labels on the rows it labelled, star-threshold on every other candidate."""
    import numpy as np

    return np.where(data.llm_candidates, data.llm_picked, rule_star_threshold(data, options))


def rule_all_positive(data, options):
    import numpy as np

    return np.ones(len(data.candidates), dtype=bool)


def rule_all_negative(data, options):
    import numpy as np

    return np.zeros(len(data.candidates), dtype=bool)


def collaborative_scores(data, options):
    """A LightGCN (main.py's model, sampler and epoch) trained `options.epochs` epochs on the train
    positives of train_original (no early stopping: the validation split is not read), seeded as
    main.py seeds; each candidate row's score <user, item>, 0 elsewhere. load_splits has checked
    that every user and item of a train row has a train positive, so each has a representation."""
    import numpy as np
    import torch
    from tqdm import tqdm

    import cli
    import devices
    import splits
    from catalog import split_path
    from training import TrainConfig, build_model
    from utils import set_seed

    # ReFINe's similarity flags r and s: plain LightGCN never uses them, and 1 fits any data.
    config = TrainConfig(model="lightgcn", r=1, s=1)
    torch.set_num_threads(options.threads)
    set_seed(options.seed)  # as main.py: seeds, then data, then the model
    device = devices.resolve_device(options.device)
    model_data = splits.load_splits(options.data_dir, options.name, augment=False)
    # Data main.py could not train on: the same one line as main.py's.
    splits.check_trainable(model_data, config, cli.build_parser().get_default("top_k"),
                           split_path(options.data_dir, options.name, "train_original"))
    model, negatives, train_one_epoch = build_model(config, model_data.to(device))
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    for epoch in tqdm(range(1, options.epochs + 1), desc="collaborative: LightGCN epochs", unit="epoch",
                      disable=None):
        model.train()
        train_one_epoch(model, optimizer, model_data, negatives, epoch, config)
    with torch.no_grad():
        emb = model.propagate_embeddings().cpu().numpy()
    user_index = {user_id(u): i for i, u in enumerate(model_data.user_ids.tolist())}
    item_index = {user_id(i): model_data.num_users + j for j, i in enumerate(model_data.item_ids.tolist())}
    items = [user_id(i) for i in data.train[ITEM_COL].to_numpy()]
    scores = np.zeros(len(data.candidates))
    for row in np.flatnonzero(data.candidates):
        scores[row] = float(emb[user_index[data.users[row]]] @ emb[item_index[items[row]]])
    return scores


def rule_collaborative(data, options):
    """As many positives per user as the LLM chose: the candidates a LightGCN trained on the train
    positives scores highest."""
    return top_n_per_user(data, collaborative_scores(data, options), llm_counts(data))


RULES = {
    "llm": rule_llm,
    "random-matched": rule_random_matched,
    "user-mean": rule_user_mean,
    "collaborative": rule_collaborative,
    "all-positive": rule_all_positive,
    "all-negative": rule_all_negative,
    "star-threshold": rule_star_threshold,
    "llm+star-threshold": rule_llm_star_threshold,
}
# Rules that draw random numbers: their output depends on --seed.
SEEDED = ("random-matched", "collaborative")
# The rules experiments.py's --preset relabel trains on, each from dataset-relabel/<rule>/ (RELABEL_DIR).
# Fixed: the committed results of that preset depend on its configs (star-threshold is not one).
NON_LLM_RULES = ("random-matched", "user-mean", "collaborative", "all-positive", "all-negative")
RELABEL_DIR = "dataset-relabel"

# --scope: whose 2/3 rows are candidates. Rules that cannot act beyond the LLM's users, and why.
SCOPES = ("answered", "all")
ANSWERED_ONLY = {
    "random-matched": "it takes the LLM's count of positives per user, which only answered users have",
    "collaborative": "it takes the LLM's count of positives per user, which only answered users have",
    "llm": "the LLM labelled only the users it answered",
}
# Rules whose candidates are every user's: the LLM's answered users and the others.
ALL_ONLY = {"llm+star-threshold": "it labels the users the LLM did not answer with star-threshold, so its "
                                  "candidates are every user's 2/3 rows"}


def default_scope(rule):
    return "all" if rule in ALL_ONLY else "answered"


def check_scope(rule, scope):
    """InputError for a rule that cannot run at `scope`."""
    if scope == "all" and rule in ANSWERED_ONLY:
        raise InputError(f"--rule {rule} --scope all: {ANSWERED_ONLY[rule]}; use --scope answered")
    if scope == "answered" and rule in ALL_ONLY:
        raise InputError(f"--rule {rule} --scope answered: {ALL_ONLY[rule]}; leave out --scope (or give "
                         f"--scope all)")


def at_scope(data, scope):
    """`data` with the candidates of `scope`: at all, every user's 2/3 rows; the LLM's labels as they are."""
    from dataclasses import replace

    if scope == "answered":
        return data
    return replace(data, candidates=data.train[RATING_COL].isin([2, 3]).to_numpy())


# The sets experiments.py makes itself in RELABEL_DIR/<set>/ (a config's --data_dir), as
# name -> (rule, scope): <rule> at scope answered, <rule>-all at scope all.
RELABEL_SETS = {
    **{rule: (rule, "answered") for rule in (*NON_LLM_RULES, "star-threshold")},
    **{f"{rule}-all": (rule, "all") for rule in ("user-mean", "all-positive", "all-negative", "star-threshold")},
    "llm+star-threshold": ("llm+star-threshold", "all"),
}
# Sets drawn anew per training seed, in RELABEL_DIR/<set>/seed<S>/: the rule with --seed S.
FRESH_SETS = {"random-matched-fresh": ("random-matched", "answered")}


def relabel_set(data_dir):
    """(rule, scope, seed) of a --data_dir that names a set of RELABEL_SETS or FRESH_SETS (seed None:
    the relabel command's default), else None. Fresh sets are RELABEL_DIR/<set>/seed<S>."""
    import re

    parts = Path(data_dir).parts
    if len(parts) == 2 and parts[0] == RELABEL_DIR and parts[1] in RELABEL_SETS:
        return (*RELABEL_SETS[parts[1]], None)
    if len(parts) == 3 and parts[0] == RELABEL_DIR and parts[1] in FRESH_SETS:
        match = re.fullmatch(r"seed(\d+)", parts[2])
        if match and int(match.group(1)) < 2 ** 32:
            return (*FRESH_SETS[parts[1]], int(match.group(1)))
    return None


def per_user_counts(data, picked):
    """[(user, candidates, LLM 4.5, rule 4.5, rule 0.5, same label as the LLM)] of the users with
    candidates, in order of first appearance in train_original. For a user the LLM did not answer
    the two LLM columns are "" (it has no label to count or agree with)."""
    counts, answered = {}, set()
    for user, candidate, labelled, mine, llm in zip(data.users, data.candidates, data.llm_candidates, picked,
                                                     data.llm_picked):
        if candidate:
            row = counts.setdefault(user, [0, 0, 0, 0, 0])
            row[0] += 1
            row[1] += int(labelled and llm)
            row[2] += int(mine)
            row[3] += int(not mine)
            row[4] += int(labelled and mine == llm)
            if labelled:
                answered.add(user)
    return [(user, n, llm if user in answered else "", mine, rest, same if user in answered else "")
            for user, (n, llm, mine, rest, same) in counts.items()]
