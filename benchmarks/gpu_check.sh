#!/usr/bin/env bash
# GPU check of the GPU trainer preset, unchanged: (1) the embedded tiny base (copied to .devcache/tiny) and (2) a
# randomly initialised ~0.3B Llama with our tokenizer. On a machine without hub access, carry the wheels TRL,
# datasets, hydra-core, omegaconf, ... need in .whl/ (see the closing note of issue 3). Run from the repo root.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch,transformers,trl;print('torch',torch.__version__,'transformers',transformers.__version__,'trl',trl.__version__,'cuda',torch.cuda.is_available())"
S="studies_dir=$OUT/studies study=gpu-check wandb.enabled=false hydra.run.dir=/tmp/hydra"
echo "== 1: tiny base, trainer=gpu, 4 stages x 25 steps"
time timeout 200 python3 -m orderopt.cli train trainer=gpu model=hf model.name_or_path=.devcache/tiny schedule.steps=25 $S 2>&1 | grep -v "Warning\|warnings.warn\|evaluate_task" | tail -25
echo "== 2: random Llama 1024x24 (~0.3B), trainer=gpu, 4 stages x 3 steps"
python3 - <<'PY'
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
tok = AutoTokenizer.from_pretrained(".devcache/tiny")
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16,
                  num_key_value_heads=16, max_position_embeddings=1024, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  bos_token_id=tok.bos_token_id)
m = LlamaForCausalLM(cfg); print("params %.0fM" % (sum(p.numel() for p in m.parameters()) / 1e6))
m.save_pretrained("/tmp/big"); tok.save_pretrained("/tmp/big")
PY
time timeout 300 python3 -m orderopt.cli train trainer=gpu model=hf model.name_or_path=/tmp/big schedule.steps=3 $S 2>&1 | grep -v "Warning\|warnings.warn\|evaluate_task" | tail -30
nvidia-smi --query-gpu=memory.used --format=csv,noheader
i=0; for f in $(find $OUT/studies -name result.json); do i=$((i+1)); cp "$f" "$OUT/result_$i.json"; done; rm -rf "$OUT/studies"; ls $OUT
