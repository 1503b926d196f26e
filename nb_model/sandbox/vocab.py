"""Word lists of the simulated engine, one `Vocabulary` per language.

Every list is ordered from the most common (likeliest) phrase to the rarest, so
a higher temperature visibly reaches further down the lists. Phrases contain
letters and spaces only: each word is exactly one token.
"""
from __future__ import annotations

from typing import NamedTuple


class Vocabulary(NamedTuple):
    openers: tuple[str, ...]     # sentence connectives ("However")
    subjects: tuple[str, ...]    # noun phrases before the verb
    verbs: tuple[str, ...]       # third person singular, present tense
    objects: tuple[str, ...]     # noun phrases after the verb
    endings: tuple[str, ...]     # adverbs / prepositional phrases
    prompt_noun: str             # noun phrase for a prompt word: {word} as is, {Word} capitalised
    opener_comma: bool = True    # "However, the model ..." (German: no comma)
    verb_second: bool = False    # German V2 order after an opener: "Dennoch erklärt das Modell"


def _t(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.strip().split("|"))


VOCABULARIES: dict[str, Vocabulary] = {
    "en": Vocabulary(
        openers=_t("In short|However|Meanwhile|Of course|In practice|Still|Naturally|Curiously|"
                   "Admittedly|Consequently|Nevertheless|Paradoxically"),
        subjects=_t("the model|the answer|the system|the text|this idea|the result|every word|"
                    "the question|our method|the reader|the notebook|the old library|the lighthouse|"
                    "the compass|the glacier|the evening tide|the cartographer|a sleepy volcano"),
        verbs=_t("explains|shows|describes|changes|improves|follows|reveals|predicts|measures|"
                 "balances|illuminates|untangles|serenades|tames|bewilders"),
        objects=_t("the text|the answer|each word|the structure|the question|the context|"
                   "a simple rule|the next step|the result|the distribution|a hidden pattern|"
                   "the old library|the evening tide|a velvet compass|a sleepy volcano"),
        endings=_t("clearly|again|quickly|in this case|step by step|with care|for now|"
                   "in every example|without hurry|beneath the surface|like a patient gardener|"
                   "against all odds|under a violet moon"),
        prompt_noun="the {word}",
    ),
    "fr": Vocabulary(
        openers=_t("En bref|Pourtant|Ensuite|Bien sûr|En pratique|Cependant|Par ailleurs|"
                   "Curieusement|Néanmoins|Paradoxalement|Soudain"),
        subjects=_t("le modèle|la réponse|le système|le texte|cette idée|le résultat|chaque mot|"
                    "la question|notre méthode|le lecteur|le carnet|la vieille bibliothèque|le phare|"
                    "la boussole|le glacier|la marée du soir|le cartographe|un volcan endormi"),
        verbs=_t("explique|montre|décrit|change|améliore|suit|révèle|prédit|mesure|équilibre|"
                 "éclaire|dévoile|enchante|apprivoise|déroute"),
        objects=_t("le texte|la réponse|chaque mot|la structure|la question|le contexte|"
                   "une règle simple|la prochaine étape|le résultat|la distribution|un motif caché|"
                   "la vieille bibliothèque|la marée du soir|une boussole de velours|un volcan endormi"),
        endings=_t("clairement|encore|rapidement|dans ce cas|pas à pas|avec soin|pour le moment|"
                   "à chaque exemple|sans hâte|sous la surface|comme un jardinier patient|"
                   "contre toute attente|sous une lune violette"),
        prompt_noun="chaque {word}",
    ),
    "de": Vocabulary(
        openers=_t("Dennoch|Danach|Natürlich|Allerdings|Übrigens|Trotzdem|Deshalb|Seltsamerweise|"
                   "Plötzlich|Erstaunlicherweise"),
        subjects=_t("das Modell|die Antwort|das System|der Text|diese Idee|das Ergebnis|jedes Wort|"
                    "die Frage|unsere Methode|der Leser|das Notizbuch|die alte Bibliothek|"
                    "der Leuchtturm|der Kompass|der Gletscher|die Abendflut|der Kartograf|"
                    "ein schläfriger Vulkan"),
        verbs=_t("erklärt|zeigt|beschreibt|verändert|verbessert|enthüllt|prüft|misst|berechnet|"
                 "gewichtet|beleuchtet|entwirrt|bezaubert|zähmt|verblüfft"),
        objects=_t("den Text|die Antwort|jedes Wort|die Struktur|die Frage|den Kontext|"
                   "eine einfache Regel|den nächsten Schritt|das Ergebnis|die Verteilung|"
                   "ein verborgenes Muster|die alte Bibliothek|die Abendflut|einen samtenen Kompass|"
                   "einen schläfrigen Vulkan"),
        endings=_t("deutlich|wieder|schnell|in diesem Fall|Schritt für Schritt|mit Sorgfalt|"
                   "für jetzt|in jedem Beispiel|ohne Eile|unter der Oberfläche|"
                   "wie ein geduldiger Gärtner|gegen alle Erwartung|unter einem violetten Mond"),
        prompt_noun="{Word}",
        opener_comma=False,
        verb_second=True,
    ),
    "es": Vocabulary(
        openers=_t("En resumen|Sin embargo|Luego|Por supuesto|En la práctica|Además|Curiosamente|"
                   "No obstante|Paradójicamente|De repente"),
        subjects=_t("el modelo|la respuesta|el sistema|el texto|esta idea|el resultado|cada palabra|"
                    "la pregunta|nuestro método|el lector|el cuaderno|la vieja biblioteca|el faro|"
                    "la brújula|el glaciar|la marea de la tarde|el cartógrafo|un volcán dormido"),
        verbs=_t("explica|muestra|describe|cambia|mejora|sigue|revela|predice|mide|equilibra|"
                 "ilumina|desenreda|encanta|domestica|desconcierta"),
        objects=_t("el texto|la respuesta|cada palabra|la estructura|la pregunta|el contexto|"
                   "una regla sencilla|el siguiente paso|el resultado|la distribución|"
                   "un patrón oculto|la vieja biblioteca|la marea de la tarde|"
                   "una brújula de terciopelo|un volcán dormido"),
        endings=_t("claramente|otra vez|rápidamente|en este caso|paso a paso|con cuidado|por ahora|"
                   "en cada ejemplo|sin prisa|bajo la superficie|como un jardinero paciente|"
                   "contra todo pronóstico|bajo una luna violeta"),
        prompt_noun="cada {word}",
    ),
}

# Sentence shapes, likeliest first: S subject, V verb, O object, E ending, C opener.
SHAPES: tuple[str, ...] = ("SVO", "SVOE", "CSVO", "CSVOE")

# Prompt words that make poor nouns.
STOPWORDS = frozenset(
    "this that with about from have what when where which while your their there these those "
    "please write tell explain give make into some more than then them they will would could "
    "should shall also just like very long essay short words word sentence sentences paragraph "
    "been being were does done dans avec pour cette sont mais über eine einen einem oder nicht "
    "para como esta este pero sobre describe summarize summarise list name show answer "
    "json markdown python html famous three".split()
)
