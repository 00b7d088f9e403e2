# The cjkrag HTTP service (CPU). For GPU, start from a CUDA PyTorch image and drop the torch pin line.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY . /app
RUN pip install -e '.[gpu,milvus,service]' && cjkrag models prepare
EXPOSE 8000
CMD ["cjkrag", "serve", "--host", "0.0.0.0", "--port", "8000"]
