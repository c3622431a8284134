# Export stage: the adapter as a llama.cpp LoRA GGUF on top of the base GGUF (route
# adapter), or merged, written as f16 GGUF and quantized (route merged). Either way a
# parity check compares llama.cpp's logits with torch's and fails loudly on disagreement.


rule export:
    input:
        unpack(base_model_files),
        adapter="results/{dataset}/finetune/{train_noise}/adapter",
    output:
        models=export_outputs("{dataset}", "{train_noise}"),
        parity="results/{dataset}/export/{train_noise}/parity.json",
    log:
        "logs/export/{dataset}/{train_noise}.log",
    params:
        export=config["export"],
        llm=config["llm"],
        prompt_style=config["prompt"]["style"],
    priority: 50  # on the critical path (the LLM chain): run before the many backbone jobs
    threads: config["llm"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/export.py"
