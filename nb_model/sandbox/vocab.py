"""Word lists of the simulated engine, one `Vocabulary` per language.

Every list is ordered from the most common (likeliest) phrase to the rarest, so
a higher temperature visibly reaches further down the lists. Phrases contain
letters and spaces only: each word is exactly one token. Chinese (`zh`, simplified) is written without
spaces: each character is one token, sentences end in "。" and openers take "，".
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
    spaced: bool = True          # words between spaces; False: one token per character (Chinese)
    ending_before_verb: bool = False  # the adverbial precedes the verb ("模型清楚地解释了文本")
    period: str = "."
    comma: str = ","
    in_short: str = "In short:"  # the closing line of a Markdown answer


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
    "zh": Vocabulary(
        openers=_t("简而言之|然而|与此同时|当然|在实践中|不过|自然|奇怪的是|诚然|因此|尽管如此|矛盾的是"),
        subjects=_t("模型|这个答案|系统|这段文本|这个想法|结果|每个词|这个问题|我们的方法|读者|笔记本|"
                    "古老的图书馆|灯塔|指南针|冰川|傍晚的潮水|制图师|一座沉睡的火山"),
        verbs=_t("解释了|展示了|描述了|改变了|改进了|遵循着|揭示了|预测了|测量了|平衡了|照亮了|理清了|"
                 "赞美了|驯服了|迷惑了"),
        objects=_t("文本|答案|每个词|结构|问题|上下文|一条简单的规则|下一步|结果|分布|一个隐藏的规律|"
                   "古老的图书馆|傍晚的潮水|一只天鹅绒指南针|一座沉睡的火山"),
        endings=_t("清楚地|再一次|很快地|在这种情况下|一步一步地|仔细地|暂时|在每个例子中|不慌不忙地|"
                   "在表面之下|像一位耐心的园丁一样|出乎意料地|在紫色的月光下"),
        prompt_noun="{word}",
        spaced=False,
        ending_before_verb=True,
        period="。",
        comma="，",
        in_short="总之：",
    ),
}

# Characters and words that end a candidate noun in a Chinese prompt (instructions, measure words, particles)
ZH_BREAKS = ("请|用|写|一下|介绍|描述|解释|总结|列出|说明|关于|什么|怎么|如何|为什么|是|的|了|在|和|与|把|被|给|"
             "我|你|他|她|它|们|这|那|个|些|吗|呢|吧|啊|句|话|段|篇|首|一|二|两|三|四|五|十|几|短|长|简单|"
             "中文|英文|回答|条|座|岁|位|本|张|只|种|次|向|给出|列举|通俗易懂|通俗|好奇|基本|实用|建议|学习|"
             "阅读|。|，|？|！|、|：|；")

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
