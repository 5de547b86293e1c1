
import warnings

# CompressAI (1.2) calls torch.jit.script when it is imported; recent PyTorch answers with a
# FutureWarning on every learned run and decode. It says nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)
