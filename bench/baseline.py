"""The baseline: a bare FastAPI app whose only route returns a small dict."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
