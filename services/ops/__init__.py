"""Operations commands: requeue failed jobs, replay a window from the raw landing table."""
