"""amazon-llm-rec
"""

__version__ = "0.1"
