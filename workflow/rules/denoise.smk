# Denoise stage: the published denoisers (HSD, STEAM; src/llm4dsr/denoisers), each fitted
# once per dataset and noise setting on the train windows (epoch chosen on valid). One job
# writes the denoiser's corrected windows (its backbone condition), its per-item noise
# scores on the units (a row of detection.json) and its own recommender's test metrics
# (a model of the results table), with its training cost.


rule denoise:
    input:
        windows="results/{dataset}/{noise}/windows.parquet",
        units="results/{dataset}/{noise}/units.parquet",
        catalogue="results/{dataset}/data/items.parquet",
    output:
        windows="results/{dataset}/{noise}/correct/{denoiser}/windows.parquet",
        changes="results/{dataset}/{noise}/correct/{denoiser}/changes.parquet",
        scores="results/{dataset}/{noise}/scores/{denoiser}.parquet",
        result="results/{dataset}/{noise}/denoise/{denoiser}.json",
        ranks="results/{dataset}/{noise}/denoise/{denoiser}.ranks.parquet",
    wildcard_constraints:
        denoiser=names.pattern(names.DENOISERS),
    log:
        "logs/denoise/{dataset}/{noise}/{denoiser}.log",
    benchmark:
        "results/benchmarks/denoise/{dataset}/{noise}/{denoiser}.tsv"
    params:
        settings=denoiser_settings,
        seed=config["seed"],
        ks=config["backbone"]["ks"],
    threads: config["denoise"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/denoise.py"
