"""The built-in fictional world: invented entities, typed relations, an encyclopedia, questions.

`generate_world(seed)` builds, from `random.Random(seed)` alone, a world of countries, cities,
rivers, organisations, people and books whose names are made of invented syllables. Every fact
is written once into the article of the entity it belongs to; questions name their entities
verbatim, so a search for the name finds the article that holds the fact, and the gold answer is
literally present in that article. Because nothing here exists in the real world, a model cannot
answer from memory: search is necessary, and the corpus is sufficient.

Questions come in three kinds:

- "single": one fact of the named entity ("In which city was Velmora Tashkin born?"),
- "bridge": two hops ("In which country was Velmora Tashkin born?" -> her article names the city,
  the city's article names the country),
- "comparison": two entities compared on a year ("Which was founded earlier, A or B?"); the
  answer is one of the two names.

The split holds out articles, so that no test answer is a fact the agent was trained to retrieve:
about 20% of the articles (drawn from the seed) are held out. A question is "test" when the article
holding its answer (its final hop) is held out, "train" when none of its articles is, and is not
asked at all when only an earlier hop's article is held out (about 16% of the bridge questions).
So no training question reads a held-out article at any hop, and no test question's final-hop fact
(article, answer) is retrieved in training; a test bridge question may pass through a training
article on its way to the held-out one (it still has to find the held-out fact). A comparison uses
two train or two held-out articles. Same seed, same world, byte for byte (`World.to_json`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass, field

from zerosearch_env.data.task import Task, select_split
from zerosearch_env.search.base import Document

__all__ = ["Entity", "Relation", "World", "generate_world", "ENTITY_TYPES", "TEMPLATES"]

ENTITY_TYPES = ("country", "city", "river", "organisation", "person", "book")

# How many entities of each type the default world holds (>= 1,000 in total).
_COUNTS = {"country": 40, "city": 320, "river": 80, "organisation": 260, "person": 560, "book": 180}
_TEST_FRACTION = 0.2
_COMPARISONS_PER_TYPE = 140

# Invented-name material. Names are 2-3 syllables; a generated name is rejected when it collides
# with another name or with a common real-world name or place (see `_REAL_NAMES`).
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r",
           "s", "sk", "st", "t", "th", "tr", "v", "vr", "z", "qu", "y", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "ia", "y")
_CODAS = ("", "", "", "n", "r", "l", "th", "s", "m", "nd", "rk", "sh", "x", "v", "ld", "nt")

_REAL_NAMES = frozenset("""
adam alan alex alice amanda amelia amy andrea andrew angela anna anne arthur barbara ben brian
carl carol catherine charles charlotte chris daniel david diana donald dora edward elena eli
elizabeth ella emily emma eric eva frank george grace hannah harry helen henry isabel jack james
jane jean john joseph julia karen kate laura leo linda lisa lucas lucy maria mark martha mary
mia michael mila nancy nina noah olga oliver paul peter rachel rita robert rosa ruth sam sara
sarah sofia susan thomas tina tom victor william zoe smith johnson brown jones miller davis
garcia wilson taylor moore martin lee thompson white harris clark lewis walker young king
london paris berlin rome madrid tokyo delhi cairo lima oslo kiev milan vienna prague dublin
lisbon athens moscow boston texas dallas denver sydney tehran dubai seoul hanoi manila
nairobi lagos accra rabat tunis quito bogota caracas havana kyoto osaka riga vilnius sofia
zagreb belgrade warsaw bern geneva zurich munich hamburg lyon nice porto seville valencia
india china japan brazil chile peru cuba egypt kenya ghana mali chad niger iran iraq syria
yemen oman nepal laos spain italy france greece norway sweden finland poland russia ukraine
turkey israel jordan canada mexico panama bolivia samoa tonga fiji malta cyprus wales
nile amazon thames seine rhine danube volga ganges congo yukon tigris indus
lena tara kira vera ivan omar yuri lina mira nora ida ada ava zara sasha hanna greta anton boris
igor dmitri pablo hugo felix oscar ines luca marco nara kobe milo enzo dario selma thea
pamir drury kava sharon andes alps sahara gobi tibet congo gaza siena pisa bari genoa turin
malaga bilbao leon nancy lille metz basel graz linz bonn kiel essen dresden leipzig krakow
""".split())

_OCCUPATIONS = ("painter", "cartographer", "engineer", "poet", "botanist", "physician", "architect",
                "composer", "astronomer", "merchant", "sculptor", "historian", "shipwright",
                "chemist", "weaver", "translator", "mathematician", "judge", "glassmaker", "explorer")
_ORG_KINDS = ("Institute", "Company", "Guild", "Society", "Foundation", "Works", "Academy", "Trust",
              "Press", "Observatory", "Bank", "Conservatory")
_ORG_DESCRIPTIONS = {
    "Institute": "research institute", "Company": "trading company", "Guild": "craft guild",
    "Society": "learned society", "Foundation": "charitable foundation", "Works": "manufacturing firm",
    "Academy": "teaching academy", "Trust": "shipping trust", "Press": "publishing house",
    "Observatory": "observatory", "Bank": "bank", "Conservatory": "music conservatory",
}
_BOOK_NOUNS = ("Lantern", "Orchard", "Harbor", "Mirror", "Winter", "Garden", "Tower", "Letters",
               "Voyage", "Silence", "Ashes", "Crown", "Bridge", "Compass", "Feather", "Tide")
_BOOK_GENRES = ("novel", "memoir", "verse collection", "travel account", "history", "play")
_SEAS = ("Sea of Ombrel", "Quiet Gulf", "Northern Strait", "Amber Bay", "Glass Sound")
_CURRENCIES = ("crown", "mark", "sol", "florin", "tael", "ducat", "real", "pound-weight")
_LANDSCAPES = ("hills", "salt marshes", "pine forests", "terraced valleys", "river plains", "high plateaus")

#: question templates: name -> (kind, wording)
TEMPLATES: dict[str, tuple[str, str]] = {
    "person_birthplace": ("single", "In which city was {p} born?"),
    "person_birth_year": ("single", "In what year was {p} born?"),
    "person_employer": ("single", "Which organisation did {p} work for?"),
    "org_founded_year": ("single", "In what year was the {o} founded?"),
    "org_headquarters": ("single", "In which city is the {o} headquartered?"),
    "org_founder": ("single", "Who founded the {o}?"),
    "city_country": ("single", "In which country is the city of {c} located?"),
    "river_city": ("single", "Through which city does the {r} flow?"),
    "book_author": ("single", "Who wrote {b}?"),
    "book_year": ("single", "In what year was {b} published?"),
    "country_capital": ("single", "What is the capital of {n}?"),
    "person_birth_country": ("bridge", "In which country was {p} born?"),
    "person_employer_year": ("bridge", "In what year was the organisation that {p} worked for founded?"),
    "org_founder_birthplace": ("bridge", "In which city was the founder of the {o} born?"),
    "org_country": ("bridge", "In which country is the {o} headquartered?"),
    "book_author_birthplace": ("bridge", "In which city was the author of {b} born?"),
    "book_author_birth_year": ("bridge", "In what year was the author of {b} born?"),
    "river_country": ("bridge", "Through which country does the {r} flow?"),
    "compare_org_founded": ("comparison", "Which was founded earlier, the {a} or the {b}?"),
    "compare_person_born": ("comparison", "Who was born earlier, {a} or {b}?"),
    "compare_book_published": ("comparison", "Which was published first, {a} or {b}?"),
}


@dataclass(frozen=True, slots=True)
class Entity:
    """One thing in the world. `name` is its article title; `aliases` the names that count as it."""

    id: str
    type: str
    name: str
    aliases: tuple[str, ...]
    attrs: tuple[tuple[str, str | int], ...] = ()

    def attr(self, key: str):
        for k, v in self.attrs:
            if k == key:
                return v
        raise KeyError(key)

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "name": self.name, "aliases": list(self.aliases),
                "attrs": {k: v for k, v in self.attrs}}


@dataclass(frozen=True, slots=True)
class Relation:
    """A typed fact `subject --predicate--> object`; `object` is an entity id or a literal (a year)."""

    subject: str
    predicate: str
    object: str | int

    def to_dict(self) -> dict:
        return {"subject": self.subject, "predicate": self.predicate, "object": self.object}


@dataclass(frozen=True)
class World:
    """A generated world: entities, relations, one article per entity, and questions."""

    seed: int
    entities: tuple[Entity, ...]
    relations: tuple[Relation, ...]
    documents: tuple[Document, ...]
    tasks: tuple[Task, ...]
    _by_id: dict = field(default_factory=dict, repr=False, compare=False)

    def entity(self, entity_id: str) -> Entity:
        if not self._by_id:
            self._by_id.update({e.id: e for e in self.entities})
        return self._by_id[entity_id]

    def split(self, name: str) -> list[Task]:
        """Tasks of one split ("train", "test" or "all"); another name raises a ValueError."""
        return select_split(self.tasks, name, f"world {self.seed}")

    def to_json(self) -> str:
        """A canonical, byte-stable serialisation of the whole world."""
        data = {
            "seed": self.seed,
            "entities": [e.to_dict() for e in self.entities],
            "relations": [r.to_dict() for r in self.relations],
            "documents": [d.to_dict() for d in self.documents],
            "tasks": [{**t.to_dict(), "meta": t.meta} for t in self.tasks],
        }
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def fingerprint(self) -> str:
        """sha256 of `to_json()`."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def summary(self) -> dict:
        by_type: dict[str, int] = {}
        for e in self.entities:
            by_type[e.type] = by_type.get(e.type, 0) + 1
        by_kind: dict[str, int] = {}
        for t in self.tasks:
            by_kind[t.kind] = by_kind.get(t.kind, 0) + 1
        return {"seed": self.seed, "entities": len(self.entities), "entities_by_type": by_type,
                "relations": len(self.relations), "documents": len(self.documents),
                "tasks": len(self.tasks), "tasks_by_kind": by_kind,
                "train": sum(t.split == "train" for t in self.tasks),
                "test": sum(t.split == "test" for t in self.tasks)}


_HARSH = re.compile(r"[^aeiouy]{3,}|yy|(.{2,})\1")


def _pronounceable(word: str) -> bool:
    """No cluster of three consonants, no 'yy', no directly repeated chunk ('devdev')."""
    return _HARSH.search(word) is None


class _Names:
    """Draws unique invented names; every distinctive name token is used once in the world."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set(_REAL_NAMES)

    def syllables(self, n: int) -> str:
        r = self.rng
        return "".join(r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS) for _ in range(n))

    def fresh(self, min_len: int = 5, max_len: int = 10, suffix: str = "") -> str:
        for _ in range(10_000):
            word = (self.syllables(self.rng.choice((2, 2, 3))) + suffix).capitalize()
            if (min_len <= len(word) <= max_len + len(suffix) and word.lower() not in self.used
                    and _pronounceable(word.lower())):
                self.used.add(word.lower())
                return word
        raise RuntimeError("could not draw a fresh name")  # pragma: no cover


@functools.lru_cache(maxsize=8)
def generate_world(seed: int = 0) -> World:
    """Build the world for `seed` (cached). Deterministic: uses only `random.Random(seed)`."""
    rng = random.Random(seed)
    names = _Names(rng)
    prefix = f"w{seed}"
    entities: list[Entity] = []
    relations: list[Relation] = []

    def new_id() -> str:
        return f"{prefix}-e{len(entities):06d}"

    def add(etype: str, name: str, aliases: tuple[str, ...], **attrs) -> Entity:
        e = Entity(new_id(), etype, name, aliases, tuple(sorted(attrs.items())))
        entities.append(e)
        return e

    def rel(s: Entity, p: str, o) -> None:
        relations.append(Relation(s.id, p, o.id if isinstance(o, Entity) else o))

    # --- countries, cities, rivers
    countries = []
    for _ in range(_COUNTS["country"]):
        nm = names.fresh(suffix=rng.choice(("ia", "and", "ene", "ovia", "esh")))
        countries.append(add("country", nm, (nm,), currency=rng.choice(_CURRENCIES),
                             landscape=rng.choice(_LANDSCAPES), population=rng.randrange(400, 40_000) * 1000))
    cities = []
    for i in range(_COUNTS["city"]):
        nm = names.fresh()
        country = countries[i % len(countries)] if i < 2 * len(countries) else rng.choice(countries)
        city = add("city", nm, (nm,), established=rng.randrange(700, 1700),
                   population=rng.randrange(5, 2_000) * 1000)
        rel(city, "located_in", country)
        cities.append((city, country))
    capitals = {}
    for city, country in cities:
        capitals.setdefault(country.id, city)
    for country in countries:
        rel(country, "capital", capitals[country.id])
    city_country = {c.id: k for c, k in cities}
    rivers = []
    river_cities = rng.sample([c for c, _ in cities], _COUNTS["river"])
    for i in range(_COUNTS["river"]):
        stem = names.fresh()
        nm = f"{stem} River"
        r = add("river", nm, (nm, stem), length_km=rng.randrange(40, 2400), sea=rng.choice(_SEAS))
        rel(r, "flows_through", river_cities[i])
        rivers.append((r, river_cities[i]))
    river_of_city = {c.id: r for r, c in rivers}

    # --- people (birth facts first: founders and authors are drawn from them)
    people = []
    given_names = [names.fresh(4, 8) for _ in range(120)]
    for _ in range(_COUNTS["person"]):
        given, family = rng.choice(given_names), names.fresh()
        nm = f"{given} {family}"
        born = rng.randrange(1760, 1960)
        city = rng.choice(cities)[0]
        p = add("person", nm, (nm, family), birth_year=born, occupation=rng.choice(_OCCUPATIONS))
        rel(p, "born_in", city)
        rel(p, "birth_year", born)
        people.append((p, city, born))

    # --- organisations, each founded by a distinct person 22-60 years after their birth
    orgs = []
    founders = rng.sample(people, _COUNTS["organisation"])
    for founder, _, born in founders:
        stem, kind = names.fresh(), rng.choice(_ORG_KINDS)
        nm = f"{stem} {kind}"
        year = born + rng.randrange(22, 60)
        hq = rng.choice(cities)[0]
        o = add("organisation", nm, (nm, stem), kind=kind, founded_year=year,
                staff=rng.randrange(12, 9000))
        rel(o, "founded_by", founder)
        rel(o, "founded_year", year)
        rel(o, "headquartered_in", hq)
        orgs.append((o, founder, year, hq))
    founded_by_person = {f.id: o for o, f, _, _ in orgs}

    # --- every person worked for one organisation founded within their working life if possible
    orgs_by_year = sorted(orgs, key=lambda x: (x[2], x[0].id))
    employer = {}
    for p, _, born in people:
        own = founded_by_person.get(p.id)
        if own is not None and rng.random() < 0.5:
            employer[p.id] = own
        else:
            window = [o for o, _, y, _ in orgs_by_year if born - 30 <= y <= born + 45]
            employer[p.id] = rng.choice(window or [o for o, _, _, _ in orgs])
        rel(p, "member_of", employer[p.id])

    # --- books
    books = []
    for _ in range(_COUNTS["book"]):
        stem = names.fresh()
        nm = f"The {rng.choice(_BOOK_NOUNS)} of {stem}"
        author, _, born = rng.choice(people)
        year = born + rng.randrange(20, 70)
        setting = rng.choice(cities)[0]
        b = add("book", nm, (nm,), genre=rng.choice(_BOOK_GENRES), published=year)
        rel(b, "written_by", author)
        rel(b, "published_year", year)
        books.append((b, author, year, setting))
    books_by_author: dict[str, list] = {}
    for b, a, y, _ in books:
        books_by_author.setdefault(a.id, []).append((b, y))

    # --- articles: one per entity; each fact written into its own subject's article
    texts: dict[str, str] = {}
    for country in countries:
        cap = capitals[country.id]
        texts[country.id] = (
            f"{country.name} is a country known for its {country.attr('landscape')}. "
            f"The capital of {country.name} is {cap.name}. "
            f"{country.name} has about {country.attr('population'):,} inhabitants, "
            f"and its currency is the {country.attr('currency')}. "
            f"Travellers to {country.name} often remark on its old roads and markets."
        )
    for city, country in cities:
        river = river_of_city.get(city.id)
        texts[city.id] = (
            f"{city.name} is a city in {country.name}. "
            f"{city.name} was established around the year {city.attr('established')}. "
            + (f"The {river.name} flows through {city.name}. " if river is not None else "")
            + f"Today {city.name} has roughly {city.attr('population'):,} residents."
        )
    for r, city in rivers:
        texts[r.id] = (
            f"The {r.name} is a river about {r.attr('length_km')} kilometres long. "
            f"The {r.name} flows through the city of {city.name} before it reaches the "
            f"{r.attr('sea')}. Fishers along the {r.name} are known for their flat boats."
        )
    for p, city, born in people:
        family = p.aliases[1]
        emp = employer[p.id]
        parts = [
            f"{p.name} was a {p.attr('occupation')}. ",
            f"{family} was born in {city.name} in {born}. ",
            f"{family} worked for the {emp.name}. ",
        ]
        own = founded_by_person.get(p.id)
        if own is not None:
            parts.append(f"{family} founded the {own.name}. ")
        for b, y in books_by_author.get(p.id, []):
            parts.append(f"{family} wrote {b.name}. ")
        parts.append(f"{p.name} is remembered for a patient, careful way of working.")
        texts[p.id] = "".join(parts)
    for o, founder, year, hq in orgs:
        desc = _ORG_DESCRIPTIONS[o.attr("kind")]
        texts[o.id] = (
            f"The {o.name} is a {desc}. The {o.name} was founded in {year} by {founder.name}. "
            f"The {o.name} is headquartered in {hq.name}. "
            f"It employs about {o.attr('staff')} people."
        )
    for b, author, year, setting in books:
        texts[b.id] = (
            f"{b.name} is a {b.attr('genre')} by {author.name}. "
            f"{b.name} was published in {year}. The story of {b.name} is set in {setting.name}."
        )
    documents = tuple(Document(e.id, e.name, texts[e.id]) for e in entities)

    # --- split by held-out article (see the module docstring)
    test_articles = {e.id for e in entities if rng.random() < _TEST_FRACTION}

    def split_of(support: tuple[Entity, ...]) -> str | None:
        """"test" when the answer-bearing (last) article is held out, "train" when no article is,
        None (the question is asked in neither split) when only an earlier hop's article is."""
        if support[-1].id in test_articles:
            return "test"
        return None if any(e.id in test_articles for e in support) else "train"

    raw: list[tuple[str, str, tuple[str, ...], tuple[str, ...], str, tuple[str, ...]]] = []

    def ask(template: str, answer: Entity | int, support: tuple[Entity, ...], subjects: tuple[Entity, ...],
            **slots: str) -> None:
        split = split_of(support)
        if split is None:
            return
        kind, wording = TEMPLATES[template]
        answers = (str(answer),) if isinstance(answer, int) else answer.aliases
        raw.append((template, wording.format(**slots), answers, tuple(e.name for e in support),
                    split, tuple(e.id for e in subjects)))

    for p, city, born in people:
        emp = employer[p.id]
        ask("person_birthplace", city, (p,), (p,), p=p.name)
        ask("person_birth_year", born, (p,), (p,), p=p.name)
        ask("person_employer", emp, (p,), (p,), p=p.name)
        ask("person_birth_country", city_country[city.id], (p, city), (p,), p=p.name)
        ask("person_employer_year", emp.attr("founded_year"), (p, emp), (p,), p=p.name)
    for o, founder, year, hq in orgs:
        ask("org_founded_year", year, (o,), (o,), o=o.name)
        ask("org_headquarters", hq, (o,), (o,), o=o.name)
        ask("org_founder", founder, (o,), (o,), o=o.name)
        ask("org_country", city_country[hq.id], (o, hq), (o,), o=o.name)
    person_city = {p.id: c for p, c, _ in people}
    person_born = {p.id: y for p, _, y in people}
    for o, founder, _, _ in orgs:
        ask("org_founder_birthplace", person_city[founder.id], (o, founder), (o,), o=o.name)
    for city, country in cities:
        ask("city_country", country, (city,), (city,), c=city.name)
    for r, city in rivers:
        ask("river_city", city, (r,), (r,), r=r.name)
        ask("river_country", city_country[city.id], (r, city), (r,), r=r.name)
    for b, author, year, _ in books:
        ask("book_author", author, (b,), (b,), b=b.name)
        ask("book_year", year, (b,), (b,), b=b.name)
        ask("book_author_birthplace", person_city[author.id], (b, author), (b,), b=b.name)
        ask("book_author_birth_year", person_born[author.id], (b, author), (b,), b=b.name)
    for country in countries:
        ask("country_capital", capitals[country.id], (country,), (country,), n=country.name)

    # comparisons: pairs of two train or two held-out articles, distinct years; the answer is the earlier one
    def compare(template: str, items: list[tuple[Entity, int]]) -> None:
        for held_out in (False, True):
            pool = [x for x in items if (x[0].id in test_articles) == held_out]
            want = round(_COMPARISONS_PER_TYPE * len(pool) / max(1, len(items)))
            seen: set[tuple[str, str]] = set()
            for _ in range(want * 20):
                if len(seen) >= want or len(pool) < 2:
                    break
                (a, ya), (b, yb) = rng.sample(pool, 2)
                key = tuple(sorted((a.id, b.id)))
                if ya == yb or key in seen:
                    continue
                seen.add(key)
                first = a if ya < yb else b
                ask(template, first, (a, b), (a, b), a=a.name, b=b.name)

    compare("compare_org_founded", [(o, y) for o, _, y, _ in orgs])
    compare("compare_person_born", [(p, y) for p, _, y in people])
    compare("compare_book_published", [(b, y) for b, _, y, _ in books])

    tasks = tuple(
        Task(id=f"{prefix}-q{i:05d}", question=q, answers=answers, split=split, kind=TEMPLATES[tpl][0],
             template=tpl, supporting_titles=support, data_source=f"world-{seed}",
             meta={"subjects": list(subjects)})
        for i, (tpl, q, answers, support, split, subjects) in enumerate(raw)
    )
    return World(seed=seed, entities=tuple(entities), relations=tuple(relations), documents=documents,
                 tasks=tasks)
