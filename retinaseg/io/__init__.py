"""Reading photos and masks, finding inputs, writing outputs atomically."""
