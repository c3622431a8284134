# Backbone stage: SASRec, GRU4Rec, Caser and FMLP-Rec trained on each condition's windows
# (model selection on valid only, one final test evaluation; every seed in one job),
# (a job whose windows another job already trains on, as clean in every setting and noisy
# at rate 0, copies that job's runs: common.smk same_windows_as),
# and the results table of each noise setting (means with intervals, paired
# differences against `noisy` and `clean`; the denoisers' own recommenders, from rule
# denoise, join it as models of their own; a most-popular list of each condition's train
# windows as model `mostpop`, the reference every backbone must beat).
# With backbone.test_selection_diagnostic, also the diagnostic table of what selecting
# on test (the reference code's flaw) would have added: never a result.

rule clean_windows:
    input:
        "results/{dataset}/{noise}/windows.parquet",
    output:
        "results/{dataset}/{noise}/correct/clean/windows.parquet",
    log:
        "logs/clean_windows/{dataset}/{noise}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/clean_windows.py"


rule backbone:
    input:
        unpack(backbone_inputs),  # + the runs it copies where another job has the same windows
    output:
        runs=expand(
            "results/{{dataset}}/{{noise}}/backbone/{{model}}/{{condition}}/seed{seed}.json",
            seed=config["backbone"]["seeds"],
        ),
        ranks=expand(
            "results/{{dataset}}/{{noise}}/backbone/{{model}}/{{condition}}/seed{seed}.ranks.parquet",
            seed=config["backbone"]["seeds"],
        ),
    wildcard_constraints:
        model=names.pattern(config["backbone"]["models"]),
        condition=BACKBONE_CONDITIONS,  # configured conditions + threshold sweep (common.smk)
    log:
        "logs/backbone/{dataset}/{noise}/{model}/{condition}.log",
    benchmark:
        "results/benchmarks/backbone/{dataset}/{noise}/{model}/{condition}.tsv"
    params:
        backbone=lambda w: configuration.backbone_of(config["backbone"], w.model),
        seeds=config["backbone"]["seeds"],
        max_len=config["window"]["max_history"],
    # One thread: these models are tiny, and two single-threaded runs side by side
    # beat one two-threaded run several times over (benchmarks/backbone_throughput.py).
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/backbone.py"


rule backbone_table:
    input:
        unpack(backbone_results),
    output:
        csv=report(
            "results/{dataset}/{noise}/results.csv",
            caption="../report/backbone_table.rst",
            category="Backbones",
            subcategory="{noise}",
        ),
        md="results/{dataset}/{noise}/results.md",
    log:
        "logs/backbone_table/{dataset}/{noise}.log",
    params:
        conditions=config["backbone"]["conditions"],  # of input.windows, in order: the mostpop rows
        intervals=config["intervals"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/backbone_table.py"


rule selection_gap:
    input:
        unpack(backbone_results),
    output:
        csv="results/{dataset}/{noise}/test_selection_gap.csv",
        md=report(
            "results/{dataset}/{noise}/test_selection_gap.md",
            caption="../report/selection_gap.rst",
            category="Diagnostics",
            subcategory="{noise}",
        ),
    log:
        "logs/selection_gap/{dataset}/{noise}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/selection_gap.py"
