"""Natural-language HEMS set-up (issue 15; after Michelon, Zhou and Morstyn, arXiv 2501.07919).

    schema    the household parameters a HEMS needs: units, ranges, defaults, questions
    tools     validators that read a quantity out of free text (the agent's tools)
    agent     the dialogue and the LLM interpreter (ReAct and few-shot on or off)
    rules     the deterministic rule-based interpreter (the ablation's baseline)
    resident  LLM-simulated residents: persona, hidden truth, answers
    llm       the OpenAI-compatible chat client, and llama.cpp's server on the shipped model
    evaluate  retrieval accuracy per parameter, per persona and per ablation cell
    entry     a dialogue's result as a scenario's [[households.homes]] entry
"""
